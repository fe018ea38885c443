"""Early stopping with Keras 3's exact EarlyStopping semantics, and a plain best-epoch tracker.

Epochs are 1-based here; Keras counts from 0, so Keras's `epoch < start_from_epoch` becomes
`epoch <= start_from_epoch` and its `epoch > 0` becomes `epoch > 1`.
"""
from __future__ import annotations

import math

import numpy as np

from .metrics import METRICS


def monitor_direction(monitor: str, mode: str, field: str = "mode") -> str:
    """'min' or 'max'; mode 'auto' follows the metric (accuracy and R^2 up, the rest down)."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"{field}: must be 'auto', 'min' or 'max', not {mode!r}")
    if monitor in METRICS:
        return METRICS[monitor].direction
    raise ValueError(f"{field}: cannot tell whether {monitor!r} should rise or fall; give 'min' or 'max'")


class EarlyStopping:
    """Keras's EarlyStopping, argument for argument; `update` returns True to stop.

    `wait` counts every monitored epoch and is reset only by an improvement that also beats
    the baseline; `best` and `best_epoch` follow every improvement (min_delta included). With
    restore_best_weights, the first monitored epoch's weights are kept even if not an
    improvement, and the trainer restores `best_weights` at the end whether or not stopping fired.
    """

    def __init__(self, config):
        self.config = config
        self.maximize = monitor_direction(config.monitor, config.mode, "early_stopping.mode") == "max"
        if config.patience < 0:
            raise ValueError("early_stopping.patience: must be >= 0")
        # Keras negates min_delta when minimizing so `current - min_delta` reads the same both ways
        self.min_delta = abs(config.min_delta) * (1.0 if self.maximize else -1.0)
        self.best = -math.inf if self.maximize else math.inf
        self.wait = 0
        self.best_epoch = None  # 1-based; None until a monitored epoch
        self.stopped_epoch = None
        self.best_weights: dict[str, np.ndarray] | None = None

    def __repr__(self):
        return f"EarlyStopping(monitor={self.config.monitor!r}, best={self.best}, wait={self.wait})"

    def _is_improvement(self, value: float, reference: float) -> bool:
        shifted = value - self.min_delta
        return shifted > reference if self.maximize else shifted < reference

    def update(self, epoch: int, metrics: dict, weights: dict[str, np.ndarray]) -> bool:
        current = metrics.get(self.config.monitor)
        if current is None or epoch <= self.config.start_from_epoch:
            return False
        if self.config.restore_best_weights and self.best_weights is None:
            self._keep(weights)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.config.restore_best_weights:
                self._keep(weights)
            baseline = self.config.baseline
            if baseline is None or self._is_improvement(current, baseline):
                self.wait = 0
            return False
        if self.wait >= self.config.patience and epoch > 1:
            self.stopped_epoch = epoch
            return True
        return False

    def _keep(self, weights):
        if self.best_weights is None:
            self.best_weights = {k: v.copy() for k, v in weights.items()}
        else:
            for k, v in weights.items():
                np.copyto(self.best_weights[k], v)

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        scalars = {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch,
                   "stopped_epoch": self.stopped_epoch}
        return dict(self.best_weights or {}), scalars

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        self.best = float(scalars["best"])
        self.wait = int(scalars["wait"])
        self.best_epoch = scalars["best_epoch"]
        self.stopped_epoch = scalars["stopped_epoch"]
        self.best_weights = {k: v.copy() for k, v in arrays.items()} if arrays else None


class BestTracker:
    """The best epoch by one metric (strict improvement), for `is_best` without early stopping."""

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.maximize = monitor_direction(monitor, "auto") == "max"
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None

    def update(self, epoch: int, metrics: dict) -> bool:
        value = metrics.get(self.monitor)
        if value is None:
            return False
        if (value > self.best) if self.maximize else (value < self.best):
            self.best, self.best_epoch = value, epoch
            return True
        return False

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = state["best_epoch"]
