import gzip
import re

import numpy as np
import pytest

from parity import cli
from parity.data import (
    IDX_FILES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataError,
    load_bundled,
    load_mnist,
    read_idx,
    stratified_split,
)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as an IDX file (big-endian header: magic, then dims)."""
    if magic is None:
        magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def tiny_mnist(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def write_idx_folder(folder, parts, gz=False):
    folder.mkdir(exist_ok=True)
    for key, name in IDX_FILES.items():
        data = idx_bytes(parts[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def bundled():
    return load_bundled()


def test_bundled_pools_have_fixed_sizes_and_dtypes(bundled):
    assert bundled.train_images.shape == (4000, 28, 28)
    assert bundled.test_images.shape == (1000, 28, 28)
    assert bundled.train_images.dtype == np.uint8
    assert bundled.train_labels.dtype == np.int64


def test_bundled_split_is_stratified(bundled):
    assert np.bincount(bundled.test_labels, minlength=10).tolist() == [100] * 10
    assert np.bincount(bundled.train_labels, minlength=10).tolist() == [400] * 10


def test_bundled_pools_are_disjoint_real_images(bundled):
    train = {im.tobytes() for im in bundled.train_images}
    assert not any(im.tobytes() in train for im in bundled.test_images)
    assert bundled.train_images.max() == 255  # real scans, not noise or zeros
    assert (bundled.train_images == 0).mean() > 0.7  # MNIST's black background


def test_bundled_split_is_deterministic(bundled):
    again = load_mnist()
    np.testing.assert_array_equal(again.train_images, bundled.train_images)
    np.testing.assert_array_equal(again.test_labels, bundled.test_labels)


def test_split_ignores_global_numpy_seed():
    labels = np.repeat(np.arange(10), 5)
    np.random.seed(1)  # noqa: NPY002 (the legacy global seed is what must not matter)
    first = stratified_split(labels, 2, seed=7)
    np.random.seed(2)  # noqa: NPY002
    second = stratified_split(labels, 2, seed=7)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_folder_round_trip(tmp_path, gz):
    parts = tiny_mnist()
    mnist = load_mnist(write_idx_folder(tmp_path / "idx", parts, gz=gz))
    np.testing.assert_array_equal(mnist.train_images, parts["train_images"])
    np.testing.assert_array_equal(mnist.test_labels, parts["test_labels"].astype(np.int64))
    assert mnist.train_labels.dtype == np.int64


def test_npz_round_trip(tmp_path):
    parts = tiny_mnist()
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=parts["train_images"],
        y_train=parts["train_labels"],
        x_test=parts["test_images"],
        y_test=parts["test_labels"],
    )
    mnist = load_mnist(path)
    np.testing.assert_array_equal(mnist.test_images, parts["test_images"])
    np.testing.assert_array_equal(mnist.train_labels, parts["train_labels"])


def test_keras_cache_is_read_from_keras_home(tmp_path, monkeypatch):
    parts = tiny_mnist()
    (tmp_path / "datasets").mkdir()
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=parts["train_images"],
        y_train=parts["train_labels"],
        x_test=parts["test_images"],
        y_test=parts["test_labels"],
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert load_mnist("keras").train_images.shape == (6, 28, 28)


def test_missing_path_names_argument_and_value(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(DataError, match=r"argument `data`.*nowhere\.npz.*no such file"):
        load_mnist(missing)


def test_missing_keras_cache_says_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"Keras MNIST cache at .*mnist\.npz.*never downloads"):
        load_mnist("keras")


def test_missing_idx_file_is_named(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", tiny_mnist())
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*missing"):
        load_mnist(folder)


def test_truncated_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(tiny_mnist()["train_images"])[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated.*expected 4720"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match=r"labels: truncated: 3 bytes"):
        read_idx(path)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8), magic=1234))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong magic number 1234"):
        read_idx(path)


def test_image_label_count_mismatch(tmp_path):
    parts = tiny_mnist()
    parts["train_labels"] = parts["train_labels"][:-1]
    folder = write_idx_folder(tmp_path / "idx", parts)
    with pytest.raises(
        DataError, match=r"idx3-ubyte has 6 images but train-labels-idx1-ubyte has 5"
    ):
        load_mnist(folder)


def test_npz_missing_arrays_are_named(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"partial\.npz: .*missing \['x_test', 'y_test'"):
        load_mnist(path)


def save_npz(path, **overrides):
    """A tiny valid Keras-style mnist.npz, with some arrays replaced by ``overrides``."""
    parts = tiny_mnist()
    arrays = dict(x_train=parts["train_images"], y_train=parts["train_labels"],
                  x_test=parts["test_images"], y_test=parts["test_labels"])  # fmt: skip
    np.savez(path, **{**arrays, **overrides})
    return path


def with_pixel(value, dtype=np.float64):
    images = tiny_mnist()["train_images"].astype(dtype)
    images[1, 3, 4] = value
    return images


def truncated_npz(path):
    save_npz(path)
    path.write_bytes(path.read_bytes()[:700])
    return path


def garbage_file(path):
    path.write_bytes(b"not a zip archive, just text\n")
    return path


def npy_file(path):
    np.save(path.with_suffix(".npy"), tiny_mnist()["train_images"])
    path.with_suffix(".npy").rename(path)
    return path


def float_01_images(path):
    return save_npz(path, x_train=tiny_mnist()["train_images"].astype(np.float32) / 255)


BAD_NPZ = {
    "truncated": (truncated_npz, r"expected a Keras mnist\.npz \(a zip of x_train, y_train, "
                  r"x_test, y_test\); could not read it as a zip file \(truncated"),
    "garbage": (garbage_file, r"expected a Keras mnist\.npz .*could not read it as a zip file"),
    "npy-not-npz": (npy_file, r"expected a Keras mnist\.npz .*received a single \.npy array"),
    "float-images-0-1": (float_01_images, r"x_train: expected integer pixel values 0\.\.255 "
                         r".*received dtype float32 with values in \[0, 1\]"),
    "nan-pixel": (lambda p: save_npz(p, x_train=with_pixel(np.nan)), r"x_train: .*1 NaN"),
    "inf-pixel": (lambda p: save_npz(p, x_test=with_pixel(np.inf)[:4]), r"x_test: .*1 inf"),
    "pixel-300": (lambda p: save_npz(p, x_train=with_pixel(300, np.int16)),
                  r"x_train: expected integer pixel values 0\.\.255.*dtype int16 with values "
                  r"in \[\d+, 300\]"),
    "float-labels": (lambda p: save_npz(p, y_test=np.array([1.0, 2.5, 3.0, 4.0])),
                     r"y_test: expected integer labels 0\.\.9.*received dtype float64"),
    "labels-2d": (lambda p: save_npz(p, y_train=np.zeros((6, 1), np.uint8)),
                  r"y_train: expected labels of shape \(N,\).*received shape \(6, 1\)"),
    "label-11": (lambda p: save_npz(p, y_test=np.array([1, 2, 11, 3], np.uint8)),
                 r"y_test: expected integer labels 0\.\.9.*received 11 at index 2"),
    "images-flat": (lambda p: save_npz(p, x_test=np.zeros((4, 784), np.uint8)),
                    r"x_test: expected images of shape \(N, 28, 28\).*received shape \(4, 784\)"),
    "count-mismatch": (lambda p: save_npz(p, y_train=np.zeros(5, np.uint8)),
                       r"x_train has 6 images but y_train has 5 labels"),
    "empty-test-split": (lambda p: save_npz(p, x_test=np.zeros((0, 28, 28), np.uint8),
                                            y_test=np.zeros(0, np.uint8)),
                         r"x_test: expected at least one image; received shape \(0, 28, 28\)"),
}  # fmt: skip


def run_cli(tmp_path, data, *args):
    out = tmp_path / "out"
    data_args = [] if data is None else ["--data", str(data)]
    code = cli.main(["run", "--epochs", "0", "--dtypes", "float64", "--out", str(out),
                     *data_args, *args])  # fmt: skip
    return code, (sorted(p.name for p in out.iterdir()) if out.exists() else [])


@pytest.mark.parametrize("make,message", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_bad_npz_raises_data_error_naming_file_rule_and_value(tmp_path, make, message):
    path = make(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path))}/bad\.npz: {message}"):
        load_mnist(path)


@pytest.mark.parametrize("make,message", BAD_NPZ.values(), ids=BAD_NPZ.keys())
def test_bad_npz_exits_2_naming_file_with_no_report(tmp_path, capsys, make, message):
    code, folders = run_cli(tmp_path, make(tmp_path / "bad.npz"), "--images", "2")
    err = capsys.readouterr().err
    assert code == 2 and folders == [] and "Traceback" not in err
    assert err.startswith(f"parity run: Invalid value for argument `--data`. {tmp_path}/bad.npz: ")
    assert err.rstrip().endswith(f"Received --data='{tmp_path}/bad.npz'.")
    assert re.search(message, err)


def test_images_over_the_test_split_exits_2_naming_file(tmp_path, capsys):
    code, folders = run_cli(tmp_path, save_npz(tmp_path / "small.npz"), "--images", "5")
    err = capsys.readouterr().err
    assert code == 2 and folders == [] and "Traceback" not in err
    assert (f"argument `--images`. Expected at most 4 (the test split size of npz "
            f"{tmp_path}/small.npz). Received --images=5.") in err  # fmt: skip


def test_images_bound_is_the_bundled_test_split(tmp_path, capsys):
    code, folders = run_cli(tmp_path, None, "--images", "1001")
    err = capsys.readouterr().err
    assert code == 2 and folders == []
    assert "Expected at most 1000 (the test split size of bundled" in err


def test_images_has_no_fixed_upper_bound_before_the_data_is_known():
    args = cli.build_parser().parse_args(["run", "--images", "5000"])
    assert cli.config_from_args(args).images == 5000


def test_corrupt_gzip_idx_file_is_named(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", tiny_mnist(), gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[12:22] = b"\xff" * 10  # inside the deflate stream: a zlib.error
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot be read"):
        load_mnist(folder)


def test_idx_images_header_cut_after_the_count(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(tiny_mnist()["train_images"])[:12])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated: 12 bytes"):
        read_idx(path)
