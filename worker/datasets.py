"""Datasets the worker trains on: builtins by name (deterministic for a seed) and uploaded .npz files.

Arrays come back in their natural dtypes; the engine casts X once to the configured dtype.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import datasets as sk

from service.specs import BUILTIN_DATASETS, BUILTIN_PREFIX
from service.store.artifacts import ArtifactStore

BUILTIN_ROWS = 1000  # moons, circles, sine


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def _xor(seed: int) -> Dataset:
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return Dataset(X, y, X.copy(), y.copy())  # four points: validate on the same four


def _digits(seed: int) -> Dataset:
    X, y = sk.load_digits(return_X_y=True)  # bundled with scikit-learn; the seed only affects the split
    return Dataset(X, y)


def _iris(seed: int) -> Dataset:
    X, y = sk.load_iris(return_X_y=True)
    return Dataset(X, y)


def _moons(seed: int) -> Dataset:
    X, y = sk.make_moons(n_samples=BUILTIN_ROWS, noise=0.2, random_state=seed)
    return Dataset(X, y)


def _circles(seed: int) -> Dataset:
    X, y = sk.make_circles(n_samples=BUILTIN_ROWS, noise=0.1, factor=0.5, random_state=seed)
    return Dataset(X, y)


def _sine(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-np.pi, np.pi, size=(BUILTIN_ROWS, 1))
    y = np.sin(X[:, 0]) + rng.normal(0.0, 0.1, size=BUILTIN_ROWS)
    return Dataset(X, y)


BUILTIN_LOADERS: dict[str, Callable[[int], Dataset]] = {
    "xor": _xor, "digits": _digits, "iris": _iris, "moons": _moons, "circles": _circles, "sine": _sine,
}
assert BUILTIN_LOADERS.keys() == BUILTIN_DATASETS.keys()


def load_builtin(name: str, seed: int) -> Dataset:
    try:
        loader = BUILTIN_LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown builtin dataset {name!r}; known: {', '.join(BUILTIN_LOADERS)}") from None
    return loader(seed)


def load_uploaded(path: Path) -> Dataset:
    """Read an uploaded dataset (validated at upload) from its .npz, never unpickling anything."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"X", "y"} - set(data.files)
        if missing:
            raise ValueError(f"dataset file {Path(path).name} lacks {', '.join(sorted(missing))}")
        has_val = "X_val" in data.files and "y_val" in data.files
        return Dataset(data["X"], data["y"], data["X_val"] if has_val else None, data["y_val"] if has_val else None)


def load_dataset(dataset_id: str, key: str | None, seed: int, artifacts: ArtifactStore) -> Dataset:
    """`builtin:<name>` ids are generated; anything else is read from the artifact store (a local
    copy for the load: np.load needs a seekable file, and an S3 object is not one)."""
    if dataset_id.startswith(BUILTIN_PREFIX):
        return load_builtin(dataset_id.removeprefix(BUILTIN_PREFIX), seed)
    if key is None:
        raise ValueError(f"dataset {dataset_id} has no file")
    with artifacts.local_copy(key) as path:
        return load_uploaded(path)
