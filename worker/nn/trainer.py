"""Training: the whole state in one object, an epoch loop over preallocated buffers, exact resume.

`Trainer.state_dict()` holds everything the next epoch depends on (weights, batch-norm
statistics, optimizer slots and step, schedule and early-stopping state, the RNG's bit-generator
state, the epoch and the metrics of the best epoch so far), so a checkpoint written after epoch k
resumes bit for bit. Its size is O(model), whatever the epoch: the per-epoch history is not in it
(whoever keeps the history, as the service's database does, passes it back to `load_checkpoint`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

from .callbacks import EpochEnd, FitResult
from .checkpoint import frozen_writer, load_npz, strip_prefix, with_prefix, write_npz
from .config import TrainConfig
from .data import prepare
from .early_stopping import BestTracker, EarlyStopping
from .losses import task_of
from .metrics import count_correct, mean_absolute_error, measured_metrics, predicted_classes, r2_score
from .model_file import Model, build_meta
from .network import LayerSpec, Network, weight_key, zeros_like_params
from .optimizers import make_optimizer
from .schedules import make_schedule
from .transfer import Transfer

CHECKPOINT_FORMAT = "backprop-lab-checkpoint"
CHECKPOINT_VERSION = 2  # 1 held the whole history; still read
READABLE_VERSIONS = (1, 2)
EVAL_ROWS = 4096  # rows per forward pass when evaluating; bounds evaluation buffers
MAX_STEP_LOSS = 1e30  # a batch loss beyond this is treated as divergence before it overflows


class Trainer:
    """Trains a network described by a TrainConfig on (X, y); see docs/engine.md.

    `transfer` starts hidden layers from given arrays and may fix the input standardization;
    pass the same one again when resuming (the checkpoint replaces the weights, not the data).
    """

    def __init__(self, config: TrainConfig, X, y=None, X_val=None, y_val=None, *,
                 transfer: Transfer | None = None, clock=time.perf_counter):
        _check_config(config)
        self.config = config
        self.clock = clock
        self.task = task_of(config)
        self.data = prepare(config, X, y, X_val, y_val,
                            standardization=transfer.standardization if transfer is not None else None)
        d = self.data
        self.has_validation = d.X_val is not None
        self.classification = self.task == "classification"
        layers = [LayerSpec(la.units, la.activation, la.dropout, la.batch_norm) for la in config.hidden_layers]
        layers.append(LayerSpec(d.train.T.shape[1], config.output_activation))  # one-hot, 1 or values wide
        self.rng = np.random.Generator(np.random.PCG64(config.seed))
        self.network = Network(d.X.shape[1], layers, config.loss, config.dtype)
        self.network.initialize(self.rng, config.init)
        if transfer is not None:
            transfer.apply(self.network)
        self.network.freeze(config.freeze)
        self.optimizer = make_optimizer(config.optimizer, self.network.trainable_params)
        self.schedule = make_schedule(config.lr_schedule, config.optimizer.learning_rate, config.epochs)
        self.early_stopping = EarlyStopping(config.early_stopping) if config.early_stopping else None
        self.best_tracker = BestTracker("val_loss" if self.has_validation else "train_loss")
        self._check_monitors()
        self.epoch = 0
        self.history: list[dict] = []  # {"epoch": e, **metrics}: every epoch, or those since an unaided resume
        self._best_entries: list[dict] = []  # the history entries of the epochs best so far (at most two)

    def __repr__(self):
        return f"Trainer({self.network!r}, epoch={self.epoch}/{self.config.epochs})"

    # ---------------------------------------------------------------- state

    def available_metrics(self) -> set[str]:
        return measured_metrics(self.task, self.has_validation)

    def _check_monitors(self):
        available = self.available_metrics()
        checks = []
        if self.early_stopping:
            checks.append(("early_stopping.monitor", self.config.early_stopping.monitor))
        if self.config.lr_schedule.name == "reduce_on_plateau":
            checks.append(("lr_schedule.monitor", self.config.lr_schedule.monitor))
        for field, monitor in checks:
            if monitor not in available:
                raise ValueError(f"{field}: {monitor!r} is not measured in this run; "
                                 f"available: {sorted(available)}")

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-ready scalars) of the whole training state."""
        opt_arrays, opt_scalars = self.optimizer.state_dict()
        arrays = {**with_prefix("network", self.network.state_arrays()), **with_prefix("optimizer", opt_arrays)}
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "config": dataclasses.asdict(self.config),
            "rows": [int(self.data.X.shape[0]), 0 if self.data.X_val is None else int(self.data.X_val.shape[0])],
            "epoch": self.epoch,
            "best_entries": self._best_entries,
            "optimizer": opt_scalars,
            "schedule": self.schedule.state_dict(),
            "best_tracker": self.best_tracker.state_dict(),
            "rng": self.rng.bit_generator.state,
        }
        if self.early_stopping:
            es_arrays, es_scalars = self.early_stopping.state_dict()
            arrays.update(with_prefix("early_stopping", es_arrays))
            meta["early_stopping"] = es_scalars
        if self.data.mean is not None:  # what the data was prepared with: a resume must match it
            arrays.update(with_prefix("input", {"mean": self.data.mean, "std": self.data.std}))
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict, history: list[dict] | None = None) -> None:
        """Restore a state_dict. `history`: the entries of epochs 1..k the caller kept (FitResult
        .history then covers every epoch); without it, the history restarts empty at the resume
        (training, best epoch and best metrics are the same either way)."""
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("format_version") not in READABLE_VERSIONS:
            raise ValueError("checkpoint: not a checkpoint of this engine version")
        mine = json.loads(json.dumps(dataclasses.asdict(self.config)))  # as stored: tuples become lists
        theirs = meta["config"]
        defaults = dataclasses.asdict(TrainConfig())  # for fields newer than the checkpoint
        changed = sorted(k for k in mine if k != "epochs" and mine[k] != theirs.get(k, defaults[k]))
        if changed:
            raise ValueError(f"checkpoint: written with a different configuration ({', '.join(changed)})")
        rows = [int(self.data.X.shape[0]), 0 if self.data.X_val is None else int(self.data.X_val.shape[0])]
        if meta["rows"] != rows:
            raise ValueError(f"checkpoint: written for {meta['rows']} train/validation rows, this run has {rows}")
        self._check_input_standardization(strip_prefix("input", arrays))
        net_arrays = strip_prefix("network", arrays)
        target = self.network.state_arrays()
        if set(net_arrays) != set(target):
            raise ValueError("checkpoint: network arrays do not match this configuration")
        for key, value in net_arrays.items():
            if value.shape != target[key].shape or value.dtype != target[key].dtype:
                raise ValueError(f"checkpoint: {key} is {value.dtype}{value.shape}, expected "
                                 f"{target[key].dtype}{target[key].shape}")
        for key, value in net_arrays.items():
            np.copyto(target[key], value)
        self.optimizer.load_state_dict(strip_prefix("optimizer", arrays), meta["optimizer"])
        self.schedule.load_state_dict(meta["schedule"])
        self.best_tracker.load_state_dict(meta["best_tracker"])
        if self.early_stopping:
            self.early_stopping.load_state_dict(strip_prefix("early_stopping", arrays), meta["early_stopping"])
        self.rng.bit_generator.state = meta["rng"]
        self.epoch = int(meta["epoch"])
        if history is None and "history" in meta:  # format 1 carried it
            history = meta["history"]
        if history is not None and [h.get("epoch") for h in history] != list(range(1, self.epoch + 1)):
            raise ValueError(f"checkpoint: the history given does not hold epochs 1..{self.epoch} in order")
        self.history = [dict(h) for h in history or ()]
        entries = meta["best_entries"] if "best_entries" in meta else self.history
        self._best_entries = [dict(h) for h in entries if h["epoch"] in self._best_epochs()]

    def _check_input_standardization(self, saved: dict[str, np.ndarray]) -> None:
        if not saved:
            return  # written before checkpoints held it
        d = self.data
        if d.mean is None or not (np.array_equal(saved["mean"], d.mean) and np.array_equal(saved["std"], d.std)):
            raise ValueError("checkpoint: written with another input standardization (a different dataset, "
                             "or a transfer's standardization missing or changed)")

    def save_checkpoint(self, target) -> None:
        """Write the whole training state to `target` (a path or a binary file)."""
        arrays, meta = self.state_dict()
        write_npz(target, arrays, meta)

    def checkpoint_snapshot(self):
        """The whole training state as of now, frozen: a function that writes it to a target
        later (on another thread, while training goes on) exactly as save_checkpoint would now."""
        return frozen_writer(*self.state_dict())

    def load_checkpoint(self, path, history: list[dict] | None = None) -> None:
        """Restore the state saved by `save_checkpoint`; `fit` then continues exactly. `history`:
        see load_state_dict."""
        arrays, meta = load_npz(path)
        self.load_state_dict(arrays, meta, history)

    def _best_epochs(self) -> set[int]:
        """The epochs `fit` may report as best: early stopping's, and the tracker's."""
        es = self.early_stopping
        return {epoch for epoch in (es.best_epoch if es else None, self.best_tracker.best_epoch) if epoch is not None}

    @property
    def model(self) -> Model:
        """A Model holding a copy of the current weights (the best ones after fit with
        restore_best_weights)."""
        net = self.network
        copy = Network(net.n_inputs, net.layers, net.loss_name, net.dtype)
        for key, value in net.state_arrays().items():
            np.copyto(copy.state_arrays()[key], value)
        d = self.data
        meta = build_meta(copy, classes=d.classes, mean=d.mean, std=d.std, target_ndim=d.target_ndim, task=self.task)
        return Model(copy, meta)

    # ---------------------------------------------------------------- training

    def fit(self, on_epoch_end=None, should_stop=None) -> FitResult:
        """Run epochs trainer.epoch + 1 .. config.epochs; see docs/contracts.md for the callbacks."""
        cfg = self.config
        net = self.network
        n = self.data.X.shape[0]
        ws = net.workspace(min(cfg.batch_size, n))
        grads = zeros_like_params(net.trainable_params)
        eval_ws = net.workspace(min(EVAL_ROWS, self.data.X_val.shape[0])) if self.has_validation else None
        val_P = np.empty((self.data.X_val.shape[0], net.n_outputs), net.dtype) if self.has_validation else None
        saved = _Snapshot([net.state_arrays(), self.optimizer.state])
        es = self.early_stopping

        stop_reason = stopped_epoch = None
        if es is not None and es.stopped_epoch is not None:
            stop_reason, stopped_epoch = "early_stopped", es.stopped_epoch  # resumed after it fired
        while stop_reason is None and self.epoch < cfg.epochs:
            epoch = self.epoch + 1
            saved.take(self.rng, self.optimizer.steps)
            started = self.clock()
            lr = self.schedule.lr(epoch)
            outcome = self._train_epoch(ws, grads, lr, should_stop)
            if isinstance(outcome, str):
                saved.restore(self.rng, self.optimizer)
                stop_reason, stopped_epoch = outcome, epoch
                break
            metrics = self._epoch_metrics(outcome, lr, eval_ws, val_P)
            metrics["seconds"] = self.clock() - started
            if not (_finite(metrics["train_loss"]) and _finite(metrics["val_loss"]) and self._weights_finite()):
                # the epoch's last updates can overflow weights after its losses were measured
                saved.restore(self.rng, self.optimizer)
                stop_reason, stopped_epoch = "diverged", epoch
                break
            self.epoch = epoch
            entry = {"epoch": epoch, **metrics}
            self.history.append(entry)
            tracked_best = self.best_tracker.update(epoch, metrics)
            early_stop = False
            if es is not None:
                early_stop = es.update(epoch, metrics, net.state_arrays())
                is_best = es.best_epoch == epoch
            else:
                is_best = tracked_best
            best_epochs = self._best_epochs()
            self._best_entries = [e for e in (*self._best_entries, entry) if e["epoch"] in best_epochs]
            self.schedule.on_epoch_end(epoch, metrics)
            if on_epoch_end is not None:
                asked = on_epoch_end(EpochEnd(epoch, dict(metrics), is_best, self))
                if isinstance(asked, str):
                    stop_reason, stopped_epoch = asked, epoch
            if stop_reason is None and early_stop:
                stop_reason, stopped_epoch = "early_stopped", epoch

        if es is not None and es.config.restore_best_weights and es.best_weights is not None:
            for key, value in es.best_weights.items():
                np.copyto(net.state_arrays()[key], value)
        best_epoch = es.best_epoch if es is not None and es.best_epoch is not None else self.best_tracker.best_epoch
        return FitResult(
            stop_reason=stop_reason or "completed",
            epochs_run=self.epoch,
            best_epoch=best_epoch,
            stopped_epoch=stopped_epoch,
            best_metrics=next((dict(e) for e in self._best_entries if e["epoch"] == best_epoch), None),
            history=[dict(h) for h in self.history],
        )

    def _weights_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in self.network.state_arrays().values())

    def _train_epoch(self, ws, grads, lr, should_stop):
        """One pass over the shuffled training rows; (loss sum, correct) or a stop reason."""
        cfg = self.config
        net = self.network
        X, T, labels = self.data.X, self.data.train.T, self.data.train.labels
        all_params, params = net.params, net.trainable_params
        step = self.optimizer.step
        forward, backward = net.forward, net.backward
        rng = self.rng
        batch_size = ws.rows
        weight_keys = [weight_key(i) for i in range(len(net.layers))]
        trainable_weights = frozenset(key for key in weight_keys if key in params)  # AdamW decays these
        l2, clip_norm = cfg.l2, cfg.clip_norm
        lr = float(lr)

        perm = rng.permutation(X.shape[0])
        loss_sum = 0.0
        correct = 0
        for start in range(0, X.shape[0], batch_size):
            idx = perm[start:start + batch_size]
            b = ws.batch(idx.shape[0])
            np.take(X, idx, axis=0, out=b.x, mode="clip")  # indices are in range; clip skips a buffered copy
            np.take(T, idx, axis=0, out=b.t, mode="clip")
            batch_loss = forward(b, b.x, b.t, training=True, rng=rng)
            if labels is not None:
                np.take(labels, idx, out=b.labels, mode="clip")
                correct += count_correct(b.P, b.labels)
            backward(b, b.x, b.t, grads)
            if l2:
                penalty = 0.0  # over every weight, as val_loss counts it; frozen ones get no gradient
                for key in weight_keys:
                    W = all_params[key]
                    penalty += float(np.vdot(W, W))
                    if key in trainable_weights:
                        grads[key] += l2 * W
                batch_loss += 0.5 * l2 * penalty * b.m
            if clip_norm is not None:
                _clip_by_global_norm(grads, clip_norm)
            if not abs(batch_loss) < MAX_STEP_LOSS:  # also catches NaN
                return "diverged"
            step(params, grads, lr, trainable_weights)
            loss_sum += batch_loss
            if should_stop is not None:
                asked = should_stop()
                if asked:
                    return str(asked)
        return loss_sum, correct

    def _epoch_metrics(self, outcome, lr, eval_ws, val_P) -> dict:
        loss_sum, correct = outcome
        d = self.data
        n = d.X.shape[0]
        metrics = dict.fromkeys(("train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_r2",
                                 "val_mae", "lr", "seconds"))
        metrics["train_loss"] = loss_sum / n
        if self.classification:
            metrics["train_accuracy"] = correct / n
        if self.has_validation:
            val_loss = self._predict_into(eval_ws, d.X_val, d.val.T, val_P) / d.X_val.shape[0]
            if self.config.l2:
                val_loss += 0.5 * self.config.l2 * sum(
                    float(np.vdot(W, W)) for k, W in self.network.params.items() if k.endswith(".weight"))
            metrics["val_loss"] = val_loss
            if self.classification:
                metrics["val_accuracy"] = float(np.count_nonzero(predicted_classes(val_P) == d.val.labels)) \
                    / d.X_val.shape[0]
            elif self.task == "regression" and _finite(val_loss):
                metrics["val_r2"] = r2_score(d.val.T, val_P)
                metrics["val_mae"] = mean_absolute_error(d.val.T, val_P)
        metrics["lr"] = lr
        return metrics

    def _predict_into(self, ws, X, T, out) -> float:
        """Inference-mode forward over X in chunks; predictions into `out`, summed loss returned."""
        loss_sum = 0.0
        for start in range(0, X.shape[0], ws.rows):
            stop = min(start + ws.rows, X.shape[0])
            b = ws.batch(stop - start)
            loss_sum += self.network.forward(b, X[start:stop], T[start:stop], training=False)
            out[start:stop] = b.P
        return loss_sum


class _Snapshot:
    """Copies of the state arrays at an epoch's start, to undo an unfinished or diverged epoch."""

    def __init__(self, groups: list[dict[str, np.ndarray]]):
        self.live = [a for group in groups for a in group.values()]
        self.copies = [np.empty_like(a) for a in self.live]
        self.rng_state = None
        self.steps = 0

    def take(self, rng, steps: int):
        for copy, live in zip(self.copies, self.live):
            np.copyto(copy, live)
        self.rng_state = rng.bit_generator.state
        self.steps = steps

    def restore(self, rng, optimizer):
        for copy, live in zip(self.copies, self.live):
            np.copyto(live, copy)
        rng.bit_generator.state = self.rng_state
        optimizer.steps = self.steps


def _clip_by_global_norm(grads: dict[str, np.ndarray], clip_norm: float) -> None:
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if norm > clip_norm:
        scale = clip_norm / norm
        for g in grads.values():
            g *= scale


def _finite(value) -> bool:
    return value is None or math.isfinite(value)


def _check_config(config) -> None:
    if config.epochs < 0:
        raise ValueError("epochs: must be >= 0")
    if config.batch_size < 1:
        raise ValueError("batch_size: must be at least 1")
    if config.l2 < 0:
        raise ValueError("l2: must be >= 0")
    if config.clip_norm is not None and not config.clip_norm > 0:
        raise ValueError("clip_norm: must be positive")
    if config.dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: must be 'float32' or 'float64', not {config.dtype!r}")
    if not isinstance(config.freeze, (list, tuple)):
        raise ValueError("freeze: must be a list of hidden layer indexes")
    json.dumps(dataclasses.asdict(config))  # the checkpoint stores it
