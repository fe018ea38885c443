"""What training reports: one EpochEnd per finished epoch, one FitResult at the end."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .metrics import METRICS

METRIC_NAMES = (*METRICS, "lr", "seconds")


@dataclass
class EpochEnd:
    """Passed to `on_epoch_end` after early-stopping and schedule state are updated.

    `metrics` has every name of METRIC_NAMES (None where not measured) and no `epoch` key;
    `is_best` follows early stopping's monitor if set, else val_loss with validation, else train_loss.
    `fold` is None outside cross-validation; there it is the fold's index (0-based), and
    `folds` (one past the last fold) for the final training on all rows. `run` is the object
    whose `save_checkpoint` captures the whole run: the trainer itself, or the CrossValidation
    around it.
    """

    epoch: int  # 1-based, within the fold when cross-validating
    metrics: dict
    is_best: bool
    trainer: Any = field(repr=False)
    fold: Optional[int] = None
    run: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.run is None:
            self.run = self.trainer


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
