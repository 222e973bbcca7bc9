import gzip

import numpy as np
import pytest

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
    with pytest.raises(DataError, match=r"count mismatch: 6 images, 5 labels"):
        load_mnist(folder)


def test_labels_outside_0_9(tmp_path):
    parts = tiny_mnist()
    parts["test_labels"][2] = 11
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        x_train=parts["train_images"],
        y_train=parts["train_labels"],
        x_test=parts["test_images"],
        y_test=parts["test_labels"],
    )
    with pytest.raises(DataError, match=r"\(test\): labels must be in 0\.\.9; label 11 at index 2"):
        load_mnist(path)


def test_npz_missing_arrays_are_named(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"partial\.npz: .*missing \['x_test', 'y_test'"):
        load_mnist(path)


def test_npz_wrong_image_shape(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(
        path,
        x_train=np.zeros((2, 784), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((1, 784), np.uint8),
        y_test=np.zeros(1, np.uint8),
    )
    with pytest.raises(
        DataError,
        match=r"x_train: expected images of shape \(N, 28, 28\); got \(2, 784\)",
    ):
        load_mnist(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"garbage\.npz: not a readable \.npz"):
        load_mnist(path)
