"""The names the engine accepts, read off its registries: what the contract derives its choices from.

The registries live beside what they name: ACTIVATIONS/DERIVATIVES (activations.py),
LOSS_FUNCTIONS (losses.py), OPTIMIZERS (optimizers.py), SCHEDULES (schedules.py), INITIALIZERS
(initializers.py), METRICS (metrics.py). This module only lists their keys in the shapes callers
need, so adding an activation is one edit in activations.py.
"""
from __future__ import annotations

from .activations import ACTIVATIONS, OUTPUT_ONLY_ACTIVATIONS
from .initializers import INITIALIZERS
from .losses import LOSS_FUNCTIONS
from .metrics import METRICS, TASKS
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULES

HIDDEN_ACTIVATIONS = tuple(name for name in ACTIVATIONS if name not in OUTPUT_ONLY_ACTIVATIONS)
OUTPUT_ACTIVATIONS = tuple(ACTIVATIONS)
LOSSES = tuple(LOSS_FUNCTIONS)
OPTIMIZER_NAMES = tuple(OPTIMIZERS)
SCHEDULE_NAMES = tuple(SCHEDULES)
INITIALIZER_NAMES = tuple(INITIALIZERS)
MONITORS = tuple(METRICS)  # every per-epoch metric may be monitored
MAXIMIZED = tuple(name for name, metric in METRICS.items() if metric.direction == "max")
MINIMIZED = tuple(name for name, metric in METRICS.items() if metric.direction == "min")
DEFAULT_OUTPUT_ACTIVATION = {name: loss.default_output_activation for name, loss in LOSS_FUNCTIONS.items()}
REQUIRED_OUTPUT_ACTIVATION = {name: loss.output_activation for name, loss in LOSS_FUNCTIONS.items()
                              if loss.output_activation is not None}
LOSS_TASK = {name: loss.task for name, loss in LOSS_FUNCTIONS.items()}
AUTOENCODER_LOSSES = tuple(name for name, loss in LOSS_FUNCTIONS.items() if loss.reconstructs)

__all__ = [
    "HIDDEN_ACTIVATIONS", "OUTPUT_ACTIVATIONS", "LOSSES", "OPTIMIZER_NAMES", "SCHEDULE_NAMES",
    "INITIALIZER_NAMES", "MONITORS", "MAXIMIZED", "MINIMIZED", "DEFAULT_OUTPUT_ACTIVATION",
    "REQUIRED_OUTPUT_ACTIVATION", "LOSS_TASK", "AUTOENCODER_LOSSES", "TASKS",
]
