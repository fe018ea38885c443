"""What training reports: one EpochEnd per finished epoch, one FitResult at the end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

METRIC_NAMES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_r2", "val_mae", "lr", "seconds")


@dataclass
class EpochEnd:
    """Passed to `on_epoch_end` after early-stopping and schedule state are updated.

    `metrics` has every name of METRIC_NAMES (None where not measured) and no `epoch` key;
    `is_best` follows early stopping's monitor if set, else val_loss with validation, else train_loss.
    """

    epoch: int  # 1-based
    metrics: dict
    is_best: bool
    trainer: Any = field(repr=False)


@dataclass
class FitResult:
    """stop_reason: "completed" | "early_stopped" | "diverged" | a callback's string.

    epochs_run: epochs completed in total (trainer.epoch), resumed ones included.
    stopped_epoch: the epoch in which training was stopped early (None when completed);
    for "diverged" and callback stops between batches it is the unfinished epoch.
    history: one dict per completed epoch: {"epoch": e, **metrics}.
    """

    stop_reason: str
    epochs_run: int
    best_epoch: Optional[int]
    stopped_epoch: Optional[int]
    best_metrics: Optional[dict]
    history: list = field(default_factory=list)


OnEpochEnd = Callable[[EpochEnd], Optional[str]]
ShouldStop = Callable[[], Optional[str]]
