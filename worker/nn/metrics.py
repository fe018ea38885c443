"""Per-epoch metrics from predictions: accuracy, R^2 (uniform average over outputs), MAE.

METRICS is the registry of the names a run reports per epoch and a monitor may watch: which way
is better, which tasks measure each, and whether it needs validation data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "regression", "autoencoder")


@dataclass(frozen=True)
class Metric:
    direction: str  # "max" or "min": which way is better
    tasks: tuple[str, ...]  # the tasks whose runs measure it
    validation: bool  # measured on validation data, so only when there is some


METRICS = {
    "train_loss": Metric("min", TASKS, validation=False),
    "val_loss": Metric("min", TASKS, validation=True),
    "train_accuracy": Metric("max", ("classification",), validation=False),
    "val_accuracy": Metric("max", ("classification",), validation=True),
    "val_r2": Metric("max", ("regression",), validation=True),
    "val_mae": Metric("min", ("regression",), validation=True),
}


def measured_metrics(task: str, has_validation: bool) -> set[str]:
    """The METRICS a run of `task` reports (with validation data or without)."""
    return {name for name, m in METRICS.items() if task in m.tasks and (has_validation or not m.validation)}


def unmeasured_reason(name: str, task: str, has_validation: bool) -> str | None:
    """Why a run of `task` does not measure metric `name`, or None when it does."""
    metric = METRICS.get(name)
    if metric is None:
        return f"{name!r} is not a metric; choose from {sorted(METRICS)}"
    if metric.validation and not has_validation:
        return f"{name} needs validation data (validation_split > 0)"
    if task not in metric.tasks:
        return f"{name} is only measured for {' and '.join(metric.tasks)}"
    return None


def predicted_classes(P: np.ndarray) -> np.ndarray:
    """Class indices: argmax of softmax rows, or p > 0.5 for one sigmoid output."""
    if P.shape[1] == 1:
        return (P[:, 0] > 0.5).astype(np.intp)
    return P.argmax(axis=1)


def count_correct(P: np.ndarray, labels: np.ndarray) -> int:
    return int(np.count_nonzero(predicted_classes(P) == labels))


def r2_score(T: np.ndarray, P: np.ndarray) -> float:
    """Like scikit-learn's r2_score with multioutput='uniform_average'."""
    residual = ((T - P) ** 2).sum(axis=0, dtype=np.float64)
    total = ((T - T.mean(axis=0, dtype=np.float64)) ** 2).sum(axis=0, dtype=np.float64)
    scores = np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0),
                      np.where(residual > 0, 0.0, 1.0))
    return float(scores.mean())


def mean_absolute_error(T: np.ndarray, P: np.ndarray) -> float:
    return float(np.abs(T - P).mean(dtype=np.float64))
