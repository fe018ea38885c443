"""Turning user arrays into training arrays: targets, a seeded stratified split, standardization.

Targets follow the task (worker/nn/losses.py `task_of`): class labels, values, or for an
autoencoder the inputs themselves.

Each step copies the inputs at most once: the split gathers rows into new arrays, and
standardization then works in place on those (or on one cast copy when nothing is split off).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .losses import task_of

SPLIT_STREAM = 0x5EED  # the split draws from its own stream, apart from training's RNG


@dataclass
class Targets:
    T: np.ndarray  # (n, outputs) in the engine dtype
    labels: np.ndarray | None  # (n,) class indices for classification


@dataclass
class PreparedData:
    X: np.ndarray
    train: Targets
    X_val: np.ndarray | None
    val: Targets | None
    classes: list | None  # sorted labels (JSON-ready); None for regression
    mean: np.ndarray | None
    std: np.ndarray | None
    target_ndim: int  # 1 when y was a vector, so predictions come back as one


def check_features(X, name: str, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: must be 2-D (rows, features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: has no rows")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name}: must be numeric, got dtype {X.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name}: has {X.shape[1]} features, expected {n_features}")
    # min and max propagate NaN and show inf without allocating a mask the size of X
    if X.dtype.kind == "f" and not (np.isfinite(X.min()) and np.isfinite(X.max())):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return X


def class_labels(y, loss: str, name: str = "y") -> list:
    """Sorted distinct labels of `y`, as JSON-ready Python values."""
    y = np.asarray(y)
    if loss == "categorical_crossentropy" and y.ndim == 2 and y.shape[1] > 1:
        return list(range(y.shape[1]))
    y = _label_vector(y, name)
    classes = np.unique(y).tolist()
    if loss == "binary_crossentropy" and len(classes) != 2:
        raise ValueError(f"{name}: binary_crossentropy needs exactly 2 classes, found {len(classes)}")
    if loss == "categorical_crossentropy" and len(classes) < 2:
        raise ValueError(f"{name}: classification needs at least 2 classes, found {len(classes)}")
    return classes


def _label_vector(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name}: labels must be a vector (rows,), got shape {y.shape}")
    if y.dtype.kind not in "biufU":
        raise ValueError(f"{name}: labels must be numbers or strings, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name}: contains NaN or infinite labels")
    return y


def encode_targets(y, loss: str, classes: list | None, dtype, name: str = "y") -> Targets:
    y = np.asarray(y)
    if loss == "mse":
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{name}: regression targets must be numeric, got dtype {y.dtype}")
        T = y.reshape(-1, 1) if y.ndim == 1 else y
        if T.ndim != 2:
            raise ValueError(f"{name}: regression targets must be (rows,) or (rows, outputs)")
        T = np.ascontiguousarray(T, dtype=dtype)
        if not np.isfinite(T).all():
            raise ValueError(f"{name}: contains NaN or infinite targets")
        return Targets(T, None)
    if loss == "categorical_crossentropy" and y.ndim == 2 and y.shape[1] > 1:
        if y.shape[1] != len(classes):
            raise ValueError(f"{name}: one-hot targets have {y.shape[1]} columns, expected {len(classes)}")
        T = np.ascontiguousarray(y, dtype=dtype)
        if not np.isfinite(T).all() or (T < 0).any() or not np.allclose(T.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError(f"{name}: one-hot rows must be non-negative and sum to 1")
        return Targets(T, T.argmax(axis=1).astype(np.intp))
    y = _label_vector(y, name)
    known = np.asarray(classes)
    if y.dtype.kind == "U" and known.dtype.kind != "U" or y.dtype.kind != "U" and known.dtype.kind == "U":
        raise ValueError(f"{name}: labels {y.dtype} do not match the classes {known.tolist()[:5]}")
    labels = np.searchsorted(known, y)
    found = known[np.minimum(labels, len(known) - 1)] == y
    if not found.all():
        raise ValueError(f"{name}: label {y[~found][0].item()!r} is not one of the classes {known.tolist()[:10]}")
    labels = labels.astype(np.intp)
    if loss == "binary_crossentropy":
        return Targets(labels.astype(dtype).reshape(-1, 1), labels)
    T = np.zeros((y.shape[0], len(known)), dtype)
    T[np.arange(y.shape[0]), labels] = 1
    return Targets(T, labels)


def split_indices(n: int, val_fraction: float, seed: int, strata: np.ndarray | None = None):
    """Seeded (train, val) row indices, both sorted; per-stratum shares follow the whole's
    (largest remainders), so every class keeps its proportion within a row."""
    n_train = int(n * (1 - val_fraction))
    n_val = n - n_train
    if n_train < 1:
        raise ValueError("validation_split: leaves no rows to train on")
    if n_val < 1:
        raise ValueError("validation_split: leaves no rows to validate on")
    rng = np.random.Generator(np.random.PCG64([seed, SPLIT_STREAM]))
    if strata is None:
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    ideal = counts * (n_val / n)
    take = np.floor(ideal).astype(np.intp)
    short = n_val - int(take.sum())
    if short:
        by_remainder = np.argsort(-(ideal - take), kind="stable")
        take[by_remainder[:short]] += 1
    val_parts = []
    for j in range(len(values)):
        members = np.flatnonzero(inverse == j)
        val_parts.append(rng.permutation(members)[: take[j]])
    val = np.sort(np.concatenate(val_parts))
    keep = np.ones(n, bool)
    keep[val] = False
    return np.flatnonzero(keep), val


def prepare(config, X, y=None, X_val=None, y_val=None, *, standardization=None) -> PreparedData:
    """Training arrays for `config`'s task. `standardization` = (mean, std) replaces the training
    part's statistics (e.g. a source model's, for transfer learning). An autoencoder takes no
    targets: with mse it reconstructs the standardized inputs (the very arrays it is fed), with
    binary_crossentropy the raw inputs, which must lie in [0, 1]."""
    dtype = np.dtype(config.dtype)
    task = task_of(config)
    X = check_features(X, "X")
    if X_val is not None:
        X_val = check_features(X_val, "X_val", X.shape[1])
    if task == "autoencoder":
        return _prepare_autoencoder(config, dtype, X, y, X_val, y_val, standardization)
    if y is None:
        raise ValueError("y: targets are required (only an autoencoder trains without them)")
    y = np.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y: has {y.shape[0]} rows but X has {X.shape[0]}")
    classification = task == "classification"
    classes = class_labels(y, config.loss) if classification else None
    target_ndim = 1 if (y.ndim == 1 or (classification and y.ndim == 2 and y.shape[1] == 1)) else 2
    targets = encode_targets(y, config.loss, classes, dtype)

    if X_val is not None or y_val is not None:
        if X_val is None or y_val is None:
            raise ValueError("X_val, y_val: give both or neither")
        y_val = np.asarray(y_val)
        if y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"y_val: has {y_val.shape[0]} rows but X_val has {X_val.shape[0]}")
        val = encode_targets(y_val, config.loss, classes, dtype, "y_val")
    X_train, X_val, split = _split_rows(config, dtype, X, X_val, targets.labels)
    if split is not None:
        train_idx, val_idx = split
        val = Targets(targets.T[val_idx], None if targets.labels is None else targets.labels[val_idx])
        targets = Targets(targets.T[train_idx], None if targets.labels is None else targets.labels[train_idx])
    elif X_val is None:
        val = None
    mean, std = _standardize(config, X_train, X_val, standardization)
    return PreparedData(X_train, targets, X_val, val, classes, mean, std, target_ndim)


def _prepare_autoencoder(config, dtype, X, y, X_val, y_val, standardization) -> PreparedData:
    if y is not None or y_val is not None:
        raise ValueError("y: an autoencoder reconstructs X; give no targets")
    raw_targets = config.loss != "mse"
    if raw_targets:
        for name, part in (("X", X), ("X_val", X_val)):
            if part is not None and not (part.min() >= 0 and part.max() <= 1):
                raise ValueError(f"{name}: a {config.loss} autoencoder needs inputs in [0, 1]; "
                                 f"found [{part.min()}, {part.max()}] (scale them, or use mse)")
    X_train, X_val, _ = _split_rows(config, dtype, X, X_val, None)
    if raw_targets and config.standardize:
        T_train, T_val = X_train.copy(), None if X_val is None else X_val.copy()
    else:
        T_train, T_val = X_train, X_val  # the same arrays: standardized in place below, as inputs
    mean, std = _standardize(config, X_train, X_val, standardization)
    val = None if X_val is None else Targets(T_val, None)
    return PreparedData(X_train, Targets(T_train, None), X_val, val, None, mean, std, 2)


def _split_rows(config, dtype, X, X_val, strata):
    """(X_train, X_val, split): the inputs cast to `dtype`, validation rows split off (seeded,
    stratified by `strata`) when none are given and validation_split > 0; split is the
    (train, val) indices then, None otherwise. Copies when standardization will write in place."""
    if X_val is not None:
        X_train = np.array(X, dtype=dtype, order="C", copy=True if config.standardize else None)
        X_val = np.array(X_val, dtype=dtype, order="C", copy=True if config.standardize else None)
        return X_train, X_val, None
    if config.validation_split > 0:
        if not config.validation_split < 1:
            raise ValueError("validation_split: must be in [0, 1)")
        train_idx, val_idx = split_indices(X.shape[0], config.validation_split, config.seed, strata)
        X_train = np.ascontiguousarray(X[train_idx], dtype=dtype)
        X_val = np.ascontiguousarray(X[val_idx], dtype=dtype)
        return X_train, X_val, (train_idx, val_idx)
    if config.validation_split < 0:
        raise ValueError("validation_split: must be in [0, 1)")
    return np.array(X, dtype=dtype, order="C", copy=True if config.standardize else None), None, None


def _standardize(config, X_train, X_val, given):
    """Standardize in place with the training part's mean/std, or with `given` (mean, std)."""
    if not config.standardize:
        if given is not None:
            raise ValueError("standardize: a given input standardization needs standardize=True")
        return None, None
    if given is None:
        mean64 = X_train.mean(axis=0, dtype=np.float64)
        std64 = X_train.std(axis=0, dtype=np.float64)
        std64[std64 < 1e-12] = 1.0  # constant features pass through centred
        mean, std = mean64.astype(X_train.dtype), std64.astype(X_train.dtype)
    else:
        mean, std = check_standardization(given, X_train.shape[1], X_train.dtype)
    standardize_inplace(X_train, mean, std)
    if X_val is not None:
        standardize_inplace(X_val, mean, std)
    return mean, std


def check_standardization(given, n_features: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A given (mean, std) as arrays of `dtype`, checked against the inputs' width."""
    mean, std = (np.asarray(a) for a in given)
    for name, a in (("mean", mean), ("std", std)):
        if a.shape != (n_features,):
            raise ValueError(f"standardization: {name} has shape {a.shape}, the inputs have {n_features} features")
        if a.dtype.kind not in "biuf" or not np.isfinite(a).all():
            raise ValueError(f"standardization: {name} must be finite numbers")
    if not (std > 0).all():
        raise ValueError("standardization: std must be positive")
    return mean.astype(dtype), std.astype(dtype)


def standardize_inplace(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    X -= mean
    X /= std
    return X
