"""One job's run on a worker: claim → data → engine → per-epoch bookkeeping → model → outcome.

Outcomes (status / stop_reason):
- completed, early_stopped → succeeded, with the model file;
- pruned (a sweep trial ASHA stopped at a rung: the decision is taken in that epoch's
  record_epoch, waited for at rung epochs) → succeeded, with the model as of the rung epoch;
- max_runtime (the spec's max_runtime_seconds, counted per attempt) → succeeded, with the model
  as it was when time ran out, and its checkpoints;
- cancelled (requested through the API) → cancelled, no model; the checkpoints stay;
- diverged → failed, error "training diverged at epoch N", no model;
- any exception → failed, stop_reason error, error "<ExceptionType>: <message>".
- shutdown (a warm shutdown of the worker, or SIGTERM to the training process) → the job is handed
  back (queued again, the attempt not counted; or cancelled if a cancel was requested) and the
  next worker resumes it from its latest checkpoint.
A worker that lost its lease (another delivery took the job over) stops quietly, writing nothing;
it notices between batches (StopPolicy) or at the next epoch end, whichever comes first. A
database error (OperationalError: connection lost, server restarting) interrupts the run without
failing the job: the lease runs out and the reconciler resumes it from its latest checkpoint.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from service.events import job_events
from service.specs import CrossValidationSummary, EpochMetrics, FoldSummary, JobSpec
from service.store import CheckpointPolicy, LeaseLost, Store
from worker.bookkeeping import EpochBookkeeper
from worker.datasets import load_dataset
from worker.model_card import model_card
from worker.nn import (
    CrossValidation, EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, Trainer, TrainConfig,
    Transfer, load_model,
)

log = logging.getLogger(__name__)

# A run stops between batches and hands its job back when either is set: SHUTDOWN by this
# process's SIGTERM handler (worker/tasks.py), WORKER_SHUTDOWN (a multiprocessing Event shared
# with the worker's main process, worker/app.py) when the worker begins a warm shutdown.
# RUNNING says whether a job is running in this process.
SHUTDOWN = threading.Event()
WORKER_SHUTDOWN: Any = None
RUNNING = threading.Event()


def shutdown_requested() -> bool:
    return SHUTDOWN.is_set() or (WORKER_SHUTDOWN is not None and WORKER_SHUTDOWN.is_set())


CANCEL_POLL_SECONDS = 0.25  # how often should_stop asks the database; cancel lands within a second
MAX_ERROR_CHARS = 2000


def train_config(spec: JobSpec) -> TrainConfig:
    """The engine's configuration for a resolved job spec."""
    if spec.loss is None or spec.model.output_activation is None:
        raise ValueError("the job spec was not resolved against its dataset (loss/output_activation missing)")
    optimizer = spec.optimizer.model_dump()
    schedule = spec.lr_schedule.model_dump()
    return TrainConfig(
        hidden_layers=[LayerConfig(**layer.model_dump()) for layer in spec.model.hidden_layers],
        output_activation=spec.model.output_activation,
        loss=spec.loss,
        init=spec.model.init,
        optimizer=OptimizerConfig(**optimizer),  # each optimizer's own fields; the rest keep defaults
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        seed=spec.seed,
        l2=spec.l2,
        clip_norm=spec.clip_norm,
        lr_schedule=ScheduleConfig(**schedule),
        early_stopping=EarlyStoppingConfig(**spec.early_stopping.model_dump()) if spec.early_stopping else None,
        validation_split=spec.dataset.validation_split,
        standardize=spec.dataset.standardize,
        task=spec.task,
        freeze=list(spec.freeze),
    )


@dataclass(frozen=True)
class Outcome:
    status: str
    stop_reason: str
    error: str | None = None
    keeps_model: bool = False


def outcome_of(stop_reason: str, stopped_epoch: int | None) -> Outcome:
    if stop_reason in ("completed", "early_stopped", "max_runtime", "pruned"):
        return Outcome("succeeded", stop_reason, keeps_model=True)
    if stop_reason == "cancelled":
        return Outcome("cancelled", "cancelled")
    if stop_reason == "shutdown":
        return Outcome("released", "shutdown")
    if stop_reason == "diverged":
        return Outcome("failed", "diverged", f"training diverged at epoch {stopped_epoch}")
    return Outcome("failed", "error", f"training stopped for an unknown reason: {stop_reason}")


def readable(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


class StopPolicy:
    """should_stop for the engine, called between batches: max runtime; cancel requests polled at
    most every 0.25 s; with a worker id, the lease is checked at each poll (LeaseLost stops the
    run) and renewed every lease_seconds / 3, so an epoch longer than the lease keeps the job."""

    def __init__(self, store: Store, job_id: str, max_runtime_seconds: float | None,
                 monotonic: Callable[[], float], poll_seconds: float = CANCEL_POLL_SECONDS, *,
                 worker_id: str | None = None, lease_seconds: float | None = None,
                 shutdown: Callable[[], bool] | None = None, also: Callable[[], str | None] | None = None):
        self._store, self._job_id, self._monotonic, self._poll = store, job_id, monotonic, poll_seconds
        self._shutdown, self._also = shutdown, also
        self._worker_id, self._lease_seconds = worker_id, lease_seconds
        start = monotonic()
        self._deadline = start + max_runtime_seconds if max_runtime_seconds else None
        self._next_poll = start  # the first call asks at once
        self._renew_every = lease_seconds / 3 if worker_id is not None and lease_seconds else None
        self._next_renewal = start + self._renew_every if self._renew_every else None
        self.polls = self.renewals = 0

    def __call__(self) -> str | None:
        if self._shutdown is not None and self._shutdown():
            return "shutdown"
        if self._also is not None and (asked := self._also()):
            return asked
        now = self._monotonic()
        if self._deadline is not None and now >= self._deadline:
            return "max_runtime"
        if now >= self._next_poll:
            self._next_poll = now + self._poll
            self.polls += 1
            try:
                if self._next_renewal is not None and now >= self._next_renewal:
                    self._next_renewal = now + self._renew_every
                    cancel = self._store.renew_lease(self._job_id, self._worker_id, self._lease_seconds)
                    self.renewals += 1
                else:
                    cancel = self._store.cancel_requested(self._job_id, self._worker_id)
            except OperationalError as error:  # a blip: the epoch end's record_epoch is the real check
                log.warning("job %s: cancel/lease poll failed (%s); training on", self._job_id, error)
                return None
            if cancel:
                return "cancelled"
        return None


def run_job(store: Store, job_id: str, *, worker_id: str, lease_seconds: float,
            monotonic: Callable[[], float] = time.monotonic, enqueue: Callable[[str], None] | None = None) -> str:
    """Run the job if this worker can claim it; returns what happened ("skipped" or the status).
    `enqueue` publishes the sweep trials the job's end released (else the reconciler does, later)."""
    SHUTDOWN.clear()
    RUNNING.set()
    try:
        return _run_job(store, job_id, worker_id, lease_seconds, monotonic, enqueue)
    finally:
        RUNNING.clear()


def publish_released(job_ids: list[str], enqueue: Callable[[str], None] | None) -> None:
    """After the commit that released them; a failure leaves them queued for the reconciler."""
    for job_id in job_ids if enqueue is not None else ():
        try:
            enqueue(job_id)
        except Exception as error:  # noqa: BLE001 - the row is the source of truth
            log.warning("released trial %s is stored but could not be enqueued (%s); the reconciler will", job_id, error)


def _run_job(store: Store, job_id: str, worker_id: str, lease_seconds: float, monotonic, enqueue) -> str:
    events = job_events(store.settings.broker_url)  # wake-up hints for the job's live streams
    claim = store.claim_job(job_id, worker_id, lease_seconds)
    events.changed(job_id, "status")  # running now, or ended by a lost claim
    if claim is None:
        log.info("job %s: not claimable (taken, finished or cancelled); skipping", job_id)
        return "skipped"
    log.info("job %s: claimed by %s, attempt %d, resuming after epoch %d",
             job_id, worker_id, claim.attempt, claim.resume_epoch)
    try:
        outcome, best_epoch, model = _train(store, claim, worker_id, lease_seconds, monotonic)
        if outcome.status == "released":
            status = store.release_job(job_id, worker_id)
            events.changed(job_id, "status")
            log.info("job %s: shutting down; handed back (%s) for another worker to resume", job_id, status)
            return "released" if status == "queued" else status
        # the object is complete before the row names it
        stored = store.artifacts.write(store.model_key(job_id), model.save) if model is not None else None
        released = store.finish_job(job_id, worker_id, status=outcome.status, stop_reason=outcome.stop_reason,
                                    error=outcome.error, best_epoch=best_epoch, model=stored,
                                    model_card=model.meta["card"] if stored else None)
        events.changed(job_id, "status")
        publish_released(released, enqueue)
        log.info("job %s: %s (%s)", job_id, outcome.status, outcome.stop_reason)
        return outcome.status
    except LeaseLost:
        log.warning("job %s: lease lost to another delivery; stopping without writing", job_id)
        return "lease_lost"
    except OperationalError:
        log.exception("job %s: database unreachable; leaving the job to be resumed when its lease expires", job_id)
        return "interrupted"
    except Exception as error:  # noqa: BLE001 - any failure must end the job, never hang it
        log.exception("job %s: training failed", job_id)
        try:
            released = store.finish_job(job_id, worker_id, status="failed", stop_reason="error", error=readable(error))
        except LeaseLost:
            return "lease_lost"
        events.changed(job_id, "status")
        publish_released(released, enqueue)
        return "failed"


def _train(store: Store, claim, worker_id: str, lease_seconds: float, monotonic):
    spec = claim.spec
    config = train_config(spec)
    data = load_dataset(claim.dataset_id, claim.dataset_key, spec.seed, store.artifacts)
    transfer = transfer_from(store, spec)
    autoencoder = spec.task == "autoencoder"  # its target is X: the dataset's y is not used
    y, y_val = (None, None) if autoencoder else (data.y, data.y_val)
    if spec.cross_validation is not None:  # the API refuses datasets with their own X_val
        run = CrossValidation(config, data.X, y, folds=spec.cross_validation.folds, transfer=transfer)
    else:
        run = Trainer(config, data.X, y, X_val=data.X_val, y_val=y_val, transfer=transfer)
    if claim.resume_checkpoint is not None:
        with store.artifacts.local_copy(claim.resume_checkpoint) as path:
            if isinstance(run, CrossValidation):  # it keeps what it reports of each fold in its own state
                run.load_checkpoint(path)
            else:  # the checkpoint holds no history (O(model) whatever the epoch): the epoch rows are it
                run.load_checkpoint(path, stored_history(store, claim))
        if epochs_done(run) != claim.resume_epoch:
            raise RuntimeError(f"checkpoint holds epoch {epochs_done(run)}, the job's history ends at {claim.resume_epoch}")
    every = spec.checkpoint.every_epochs
    summarized: list[int | None] = [None]  # folds finished as of the summary last recorded (none yet)

    with EpochBookkeeper(store, claim.job_id, worker_id, lease_seconds=lease_seconds,
                         policy=CheckpointPolicy.of(spec), shutdown=shutdown_requested) as bookkeeper:
        bookkeeper.asha_stopped = claim.asha_stopped  # stopped at a rung before the worker was lost

        def on_epoch_end(end) -> str | None:
            # a cross-validated job numbers its epochs across folds and the refit (see EpochMetrics)
            epoch = end.epoch if end.fold is None else end.run.epochs_done
            due = epoch % every == 0 or end.epoch == config.epochs
            metrics = EpochMetrics(epoch=epoch, **{k: v for k, v in end.metrics.items() if k in EpochMetrics.model_fields})
            summary = None
            if end.fold is not None:
                metrics.fold, metrics.fold_epoch = end.fold, end.epoch
                if summarized[0] != len(end.run.results):  # a fold ended (or this run just began)
                    summary, summarized[0] = cross_validation_summary(end.run), len(end.run.results)
            asked = bookkeeper.submit(metrics, is_best=end.is_best, cross_validation=summary,
                                      checkpoint=end.run.checkpoint_snapshot() if due else None)
            if asked is None and epoch in claim.rungs:  # no rungs for a cross-validated job (sweeps refuse it)
                bookkeeper.wait()  # ASHA decides in this epoch's transaction: stop here if it says so
                asked = "pruned" if bookkeeper.asha_stopped else None
            return asked

        def stop_requested() -> str | None:
            bookkeeper.check()  # LeaseLost or a database error from the last epoch's transaction
            return "cancelled" if bookkeeper.cancel_requested else "pruned" if bookkeeper.asha_stopped else None

        should_stop = StopPolicy(store, claim.job_id, spec.max_runtime_seconds, monotonic,
                                 worker_id=worker_id, lease_seconds=lease_seconds, shutdown=shutdown_requested,
                                 also=stop_requested)
        result = run.fit(on_epoch_end=on_epoch_end, should_stop=should_stop)
        bookkeeper.wait()  # the last epoch is recorded before the outcome is
    stop_reason = result.stop_reason
    if bookkeeper.cancel_requested and stop_reason in ("completed", "early_stopped"):
        stop_reason = "cancelled"  # acknowledged by the last epoch's transaction, as before the end
    outcome = outcome_of(stop_reason, result.stopped_epoch)
    if isinstance(run, CrossValidation):
        best_epoch = None  # each fold's best is in the summary; the job's best_* follow is_best (see README)
        if outcome.keeps_model and stop_reason != "completed":  # time ran out before the refit's model
            outcome = Outcome("failed", stop_reason, f"cross-validation stopped ({stop_reason}) in fold {run.fold} "
                              "before the model was refit on all rows; the folds' results are kept")
    else:
        best_epoch = result.best_epoch
    model = run.model if outcome.keeps_model else None
    if model is not None:  # the card travels in the file's meta and onto the job (issue 9)
        model.meta["card"] = model_card(claim, data).model_dump(mode="json")
    return outcome, best_epoch, model


def stored_history(store: Store, claim) -> list[dict]:
    """The job's epochs up to the resumed checkpoint, as the engine's history entries."""
    fields, rows = store.history_rows(claim.job_id)
    history = [dict(zip(fields, row)) for row in rows]
    return [entry for entry in history if entry["epoch"] <= claim.resume_epoch]


def epochs_done(run) -> int:
    return run.epochs_done if isinstance(run, CrossValidation) else run.epoch


def transfer_from(store: Store, spec: JobSpec) -> Transfer | None:
    """The source job's layers and input standardization (init_from), read from its model file
    (the API checked at submission that it is the owner's, succeeded, and fits)."""
    if spec.init_from is None:
        return None
    stored = store.model_file(spec.init_from.job_id)
    with store.artifacts.local_copy(stored.key) as path:
        source = load_model(path)
    return Transfer.from_model(source, spec.init_from.layers)


def cross_validation_summary(run: CrossValidation) -> CrossValidationSummary:
    summary = run.summary()  # None until every fold is done
    early_stopping = run.config.early_stopping
    return CrossValidationSummary(
        monitor=early_stopping.monitor if early_stopping is not None else "val_loss",
        folds=[FoldSummary(fold=r.fold, best_epoch=r.best_epoch, best_metrics=r.best_metrics,
                           epochs_run=r.epochs_run, stop_reason=r.stop_reason) for r in run.results],
        mean=summary["mean"] if summary else None, std=summary["std"] if summary else None,
        refit_epochs=run.refit_epochs,
    )
