"""k-fold cross-validation: k trainings on seeded (stratified) folds, then the kept model trained
on all rows; the whole run is one state object that checkpoints and resumes bit for bit.

    cv = CrossValidation(config, X, y, folds=5)
    result = cv.fit(on_epoch_end=..., should_stop=...)   # EpochEnd.fold: 0..4, then 5 (the refit)
    result.summary["mean"]["val_accuracy"], cv.model

The kept model is a refit on every row for the folds' mean best epoch (rounded), not the best
fold's model: the folds estimate how well this configuration trained for that long generalizes,
and the refit sees all the data instead of (k-1)/k of it, without the optimism of picking the
fold whose validation part happened to be easiest (scikit-learn's `refit=True` does the same).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .callbacks import EpochEnd
from .checkpoint import frozen_writer, load_npz, strip_prefix, with_prefix, write_npz
from .config import TrainConfig
from .data import check_features, class_labels, encode_targets
from .losses import task_of
from .metrics import METRICS
from .trainer import Trainer
from .transfer import Transfer

CV_FORMAT = "backprop-lab-cv-checkpoint"
CV_VERSION = 1
FOLD_STREAM = 0xF01D  # fold assignment draws from its own stream, apart from training's RNG
FOLD_DONE = ("completed", "early_stopped")  # a fold ending otherwise stops the whole run


def fold_indices(n: int, folds: int, seed: int,
                 strata: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold (train, validation) row indices, both sorted. Rows are shuffled (within each
    stratum when `strata` is given) and dealt to folds in turn, strata one after another, so fold
    sizes differ by at most one and so do each stratum's counts across folds."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: must be an integer of at least 2, not {folds!r}")
    if folds > n:
        raise ValueError(f"folds: {folds} folds need at least {folds} rows, there are {n}")
    rng = np.random.Generator(np.random.PCG64([seed, FOLD_STREAM]))
    if strata is None:
        order = rng.permutation(n)
    else:
        values, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
        if counts.min() < folds:
            small = values[counts.argmin()]
            raise ValueError(f"folds: class {small.item()!r} has {counts.min()} rows, fewer than the {folds} folds "
                             "(every fold's training part must hold every class)")
        order = np.concatenate([rng.permutation(np.flatnonzero(inverse == j)) for j in range(len(values))])
    assignment = np.empty(n, np.intp)
    assignment[order] = np.arange(n) % folds
    return [(np.flatnonzero(assignment != k), np.flatnonzero(assignment == k)) for k in range(folds)]


@dataclass
class FoldResult:
    """One fold's outcome; `best_metrics` are the metrics of its best epoch (the epoch the trainer
    reported `is_best` last; its last epoch if none was)."""

    fold: int
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    stop_reason: str


@dataclass
class CrossValidationResult:
    """stop_reason: "completed" once every fold and the refit ran; otherwise the reason that
    stopped the run in fold `stopped_fold` (== folds for the refit) at `stopped_epoch`.

    summary: {"monitor", "folds", "mean": {metric: value}, "std": {metric: value}} over the
    folds' best-epoch metrics (population std, ddof=0), for every metric measured in every fold;
    refit_epochs: epochs of the refit (None until the folds are done).
    """

    stop_reason: str
    folds: list[FoldResult]
    summary: dict | None
    refit_epochs: int | None
    stopped_fold: int | None = None
    stopped_epoch: int | None = None
    refit: object = field(default=None, repr=False)  # the refit's FitResult when it ran


class CrossValidation:
    """k trainings of `config` on k folds of (X, y), then a refit on all rows; see the module doc.

    Each fold validates on its held-out part (config.validation_split is not used); the refit
    trains without validation or early stopping, for the folds' mean best epoch. `transfer`
    applies to every training. State: `fold` (current index; == folds during the refit), the
    finished folds' results, the current fold's best so far and its Trainer's state.
    """

    def __init__(self, config: TrainConfig, X, y=None, *, folds: int, transfer: Transfer | None = None,
                 clock=time.perf_counter):
        self.config = config
        self.folds = folds
        self.transfer = transfer
        self.clock = clock
        self.task = task_of(config)
        self.X = check_features(X, "X")
        self.y = None if y is None else np.asarray(y)
        if self.y is not None and self.y.shape[0] != self.X.shape[0]:
            raise ValueError(f"y: has {self.y.shape[0]} rows but X has {self.X.shape[0]}")
        schedule = config.lr_schedule
        watched = METRICS.get(schedule.monitor) if schedule.name == "reduce_on_plateau" else None
        if watched is not None and watched.validation:
            raise ValueError(f"lr_schedule.monitor: cross-validation's refit trains on every row without "
                             f"validation, so reduce_on_plateau cannot watch {schedule.monitor}; "
                             "use a train_ metric")
        strata = None
        if self.task == "classification":
            if self.y is None:
                raise ValueError("y: targets are required (only an autoencoder trains without them)")
            classes = class_labels(self.y, config.loss)
            strata = encode_targets(self.y, config.loss, classes, np.float32).labels
        self.splits = fold_indices(self.X.shape[0], folds, config.seed, strata)
        self.fold = 0
        self.results: list[FoldResult] = []
        self._best: dict | None = None  # {"epoch", "metrics"} of the current fold's best so far
        self._last: dict | None = None  # the same for its last reported epoch
        self.trainer = self._fold_trainer(0)

    def __repr__(self):
        return f"CrossValidation(folds={self.folds}, fold={self.fold}, trainer={self.trainer!r})"

    # ---------------------------------------------------------------- trainers

    def _fold_trainer(self, k: int) -> Trainer:
        train, val = self.splits[k]
        y = self.y
        return Trainer(self.config, self.X[train], None if y is None else y[train],
                       self.X[val], None if y is None else y[val], transfer=self.transfer, clock=self.clock)

    @property
    def refit_epochs(self) -> int | None:
        if len(self.results) < self.folds:
            return None
        mean = sum(r.best_epoch for r in self.results) / len(self.results)
        return max(1, math.floor(mean + 0.5))

    def refit_config(self) -> TrainConfig:
        """The refit's configuration: all rows, no validation or early stopping, refit_epochs epochs,
        and the folds' learning-rate path (a cosine keeps the folds' length)."""
        cfg = self.config
        schedule = cfg.lr_schedule
        if schedule.name == "cosine" and schedule.t_max is None:
            schedule = dataclasses.replace(schedule, t_max=max(cfg.epochs, 1))
        return dataclasses.replace(cfg, epochs=self.refit_epochs, validation_split=0.0, early_stopping=None,
                                   lr_schedule=schedule)

    def _refit_trainer(self) -> Trainer:
        return Trainer(self.refit_config(), self.X, self.y, transfer=self.transfer, clock=self.clock)

    @property
    def epochs_done(self) -> int:
        """Epochs completed in all, over finished folds, the current fold and the refit."""
        return sum(r.epochs_run for r in self.results) + self.trainer.epoch

    @property
    def model(self):
        """The refit's model; RuntimeError before the refit has finished."""
        if self.fold < self.folds or self.trainer.epoch < self.trainer.config.epochs:
            raise RuntimeError("cross-validation: no model before the refit on all rows has finished")
        return self.trainer.model

    # ---------------------------------------------------------------- running

    def fit(self, on_epoch_end=None, should_stop=None) -> CrossValidationResult:
        """Run the remaining folds, then the refit. Every epoch reaches `on_epoch_end` as an
        EpochEnd with `fold` set and `run` = this object (save its checkpoint there to resume);
        a fold stopped by anything but completion or early stopping stops the run, resumable."""
        while True:
            fold = self.fold

            def report(end: EpochEnd):
                entry = {"epoch": end.epoch, "metrics": dict(end.metrics)}
                self._last = entry
                if end.is_best:
                    self._best = entry
                if on_epoch_end is not None:
                    return on_epoch_end(dataclasses.replace(end, fold=fold, run=self))
                return None

            result = self.trainer.fit(on_epoch_end=report, should_stop=should_stop)
            if result.stop_reason not in FOLD_DONE:
                return self._result(result.stop_reason, stopped_epoch=result.stopped_epoch)
            if fold == self.folds:
                return self._result("completed", refit=result)
            self._finish_fold(result.stop_reason)

    def _finish_fold(self, stop_reason: str) -> None:
        best = self._best or self._last
        if best is None:  # a fold with no epoch at all (epochs=0)
            best = {"epoch": 0, "metrics": {}}
        self.results.append(FoldResult(self.fold, best["epoch"], _measured(best["metrics"]),
                                       self.trainer.epoch, stop_reason))
        self._best = self._last = None
        self.fold += 1
        self.trainer = self._fold_trainer(self.fold) if self.fold < self.folds else self._refit_trainer()

    def summary(self) -> dict | None:
        if len(self.results) < self.folds:
            return None
        names = [name for name in METRICS if all(name in r.best_metrics for r in self.results)]
        values = {name: np.array([r.best_metrics[name] for r in self.results], np.float64) for name in names}
        es = self.config.early_stopping
        return {
            "monitor": es.monitor if es is not None else "val_loss",  # what picked each fold's best epoch
            "folds": self.folds,
            "mean": {name: float(v.mean()) for name, v in values.items()},
            "std": {name: float(v.std()) for name, v in values.items()},
        }

    def _result(self, stop_reason, *, stopped_epoch=None, refit=None) -> CrossValidationResult:
        stopped = None if stop_reason == "completed" else self.fold
        return CrossValidationResult(stop_reason, [dataclasses.replace(r) for r in self.results], self.summary(),
                                     self.refit_epochs, stopped, stopped_epoch, refit)

    # ---------------------------------------------------------------- state

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-ready scalars) of the whole run: the current trainer's state under
        `trainer/`, and the fold index, finished folds and the current fold's best so far."""
        arrays, trainer_meta = self.trainer.state_dict()
        meta = {
            "format": CV_FORMAT,
            "format_version": CV_VERSION,
            "folds": self.folds,
            "rows": int(self.X.shape[0]),
            "fold": self.fold,
            "results": [dataclasses.asdict(r) for r in self.results],
            "best": self._best,
            "last": self._last,
            "trainer": trainer_meta,
        }
        return with_prefix("trainer", arrays), meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if meta.get("format") != CV_FORMAT or meta.get("format_version") != CV_VERSION:
            raise ValueError("checkpoint: not a cross-validation checkpoint of this engine version")
        if (meta["folds"], meta["rows"]) != (self.folds, int(self.X.shape[0])):
            raise ValueError(f"checkpoint: written for {meta['folds']} folds of {meta['rows']} rows, "
                             f"this run has {self.folds} folds of {self.X.shape[0]}")
        fold = int(meta["fold"])
        if not 0 <= fold <= self.folds or len(meta["results"]) != fold:
            raise ValueError("checkpoint: inconsistent cross-validation state")
        self.results = [FoldResult(**r) for r in meta["results"]]
        self.fold = fold
        self.trainer = self._fold_trainer(fold) if fold < self.folds else self._refit_trainer()
        self.trainer.load_state_dict(strip_prefix("trainer", arrays), meta["trainer"])
        self._best, self._last = meta["best"], meta["last"]

    def save_checkpoint(self, target) -> None:
        """Write the whole run's state, as one `.npz`, to `target` (a path or a binary file)."""
        arrays, meta = self.state_dict()
        write_npz(target, arrays, meta)

    def checkpoint_snapshot(self):
        """The whole run's state as of now, frozen (as Trainer.checkpoint_snapshot)."""
        return frozen_writer(*self.state_dict())

    def load_checkpoint(self, path) -> None:
        arrays, meta = load_npz(path)
        self.load_state_dict(arrays, meta)


def _measured(metrics: dict) -> dict:
    """The METRICS a fold measured (not None), without lr and seconds."""
    return {name: float(value) for name, value in metrics.items() if name in METRICS and value is not None}
