"""Learning-rate schedules.

`lr(epoch)` gives the rate for a 1-based epoch from the epochs already done; only
reduce-on-plateau has state, updated by `on_epoch_end(metrics)` with Keras's
ReduceLROnPlateau semantics, and saved by `state_dict()`.
"""
from __future__ import annotations

import math

import numpy as np

from .early_stopping import monitor_direction


class Schedule:
    def __init__(self, config, base_lr: float, total_epochs: int):
        self.config = config
        self.base_lr = float(base_lr)
        self.total_epochs = total_epochs

    def __repr__(self):
        return f"{type(self).__name__}(base_lr={self.base_lr})"

    def lr(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


class ConstantLR(Schedule):
    def lr(self, epoch):
        return self.base_lr


class StepLR(Schedule):
    """lr0 * gamma ** ((epoch - 1) // step_size)."""

    def lr(self, epoch):
        return self.base_lr * self.config.gamma ** ((epoch - 1) // self.config.step_size)


class ExponentialLR(Schedule):
    """lr0 * gamma ** (epoch - 1)."""

    def lr(self, epoch):
        return self.base_lr * self.config.gamma ** (epoch - 1)


class CosineLR(Schedule):
    """min_lr + (lr0 - min_lr) * (1 + cos(pi * done / t_max)) / 2, flat at min_lr after t_max."""

    def lr(self, epoch):
        t_max = self.config.t_max or max(self.total_epochs, 1)
        done = min(epoch - 1, t_max)
        min_lr = self.config.min_lr
        return min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * done / t_max))


class ReduceLROnPlateau(Schedule):
    """Keras's ReduceLROnPlateau: factor, patience, min_delta, cooldown, min_lr, mode.

    As in Keras, the rate is held as a float32 (Keras keeps it in a float32 variable), and a
    reduction happens only while the rate is above float32(min_lr). Mode "auto" takes the
    direction from the metric (accuracy and R^2 up, losses and MAE down).
    """

    def __init__(self, config, base_lr, total_epochs):
        super().__init__(config, base_lr, total_epochs)
        if not 0.0 < config.factor < 1.0:
            raise ValueError("lr_schedule.factor: must be in (0, 1)")
        self.maximize = monitor_direction(config.monitor, config.mode, "lr_schedule.mode") == "max"
        self.current_lr = float(np.float32(base_lr))
        self.best = -math.inf if self.maximize else math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def lr(self, epoch):
        return self.current_lr

    def _improved(self, current: float) -> bool:
        if self.maximize:
            return current > self.best + self.config.min_delta
        return current < self.best - self.config.min_delta

    def on_epoch_end(self, epoch, metrics):
        c = self.config
        current = metrics.get(c.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= c.patience and self.current_lr > float(np.float32(c.min_lr)):
                self.current_lr = float(np.float32(max(self.current_lr * c.factor, c.min_lr)))
                self.cooldown_counter = c.cooldown
                self.wait = 0

    def state_dict(self):
        return {"current_lr": self.current_lr, "best": self.best, "wait": self.wait,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        self.current_lr = float(state["current_lr"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


SCHEDULES = {
    "constant": ConstantLR,
    "step": StepLR,
    "exponential": ExponentialLR,
    "cosine": CosineLR,
    "reduce_on_plateau": ReduceLROnPlateau,
}


def make_schedule(config, base_lr: float, total_epochs: int) -> Schedule:
    if config.name not in SCHEDULES:
        raise ValueError(f"lr_schedule.name: unknown {config.name!r}; choose from {sorted(SCHEDULES)}")
    if config.name == "step" and config.step_size < 1:
        raise ValueError("lr_schedule.step_size: must be at least 1")
    if config.name == "cosine" and config.t_max is not None and config.t_max < 1:
        raise ValueError("lr_schedule.t_max: must be at least 1")
    return SCHEDULES[config.name](config, base_lr, total_epochs)
