"""Per-epoch metrics from predictions: accuracy, R^2 (uniform average over outputs), MAE."""
from __future__ import annotations

import numpy as np


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
