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
from service.specs import EpochMetrics, JobSpec
from service.store import CheckpointPolicy, LeaseLost, Store
from worker.bookkeeping import EpochBookkeeper
from worker.datasets import load_dataset
from worker.model_card import model_card
from worker.nn import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, Trainer, TrainConfig

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
        stored = store.artifacts.write(store.model_key(job_id), model.save) if outcome.keeps_model else None
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
    trainer = Trainer(config, data.X, data.y, X_val=data.X_val, y_val=data.y_val)
    if claim.resume_checkpoint is not None:
        # the checkpoint holds no history (O(model) whatever the epoch): the epoch rows are it
        fields, rows = store.history_rows(claim.job_id)
        history = [dict(zip(fields, row)) for row in rows]
        history = [entry for entry in history if entry["epoch"] <= claim.resume_epoch]
        with store.artifacts.local_copy(claim.resume_checkpoint) as path:
            trainer.load_checkpoint(path, history)
        if trainer.epoch != claim.resume_epoch:
            raise RuntimeError(f"checkpoint holds epoch {trainer.epoch}, the job's history ends at {claim.resume_epoch}")
    every = spec.checkpoint.every_epochs

    with EpochBookkeeper(store, claim.job_id, worker_id, lease_seconds=lease_seconds,
                         policy=CheckpointPolicy.of(spec), shutdown=shutdown_requested) as bookkeeper:
        bookkeeper.asha_stopped = claim.asha_stopped  # stopped at a rung before the worker was lost

        def on_epoch_end(end) -> str | None:
            due = end.epoch % every == 0 or end.epoch == config.epochs
            metrics = EpochMetrics(epoch=end.epoch, **{k: v for k, v in end.metrics.items() if k in EpochMetrics.model_fields})
            asked = bookkeeper.submit(metrics, is_best=end.is_best,
                                      checkpoint=end.trainer.checkpoint_snapshot() if due else None)
            if asked is None and end.epoch in claim.rungs:
                bookkeeper.wait()  # ASHA decides in this epoch's transaction: stop here if it says so
                asked = "pruned" if bookkeeper.asha_stopped else None
            return asked

        def stop_requested() -> str | None:
            bookkeeper.check()  # LeaseLost or a database error from the last epoch's transaction
            return "cancelled" if bookkeeper.cancel_requested else "pruned" if bookkeeper.asha_stopped else None

        should_stop = StopPolicy(store, claim.job_id, spec.max_runtime_seconds, monotonic,
                                 worker_id=worker_id, lease_seconds=lease_seconds, shutdown=shutdown_requested,
                                 also=stop_requested)
        result = trainer.fit(on_epoch_end=on_epoch_end, should_stop=should_stop)
        bookkeeper.wait()  # the last epoch is recorded before the outcome is
    stop_reason = result.stop_reason
    if bookkeeper.cancel_requested and stop_reason in ("completed", "early_stopped"):
        stop_reason = "cancelled"  # acknowledged by the last epoch's transaction, as before the end
    outcome, model = outcome_of(stop_reason, result.stopped_epoch), trainer.model
    if outcome.keeps_model:  # the card travels in the file's meta and onto the job (issue 9)
        model.meta["card"] = model_card(claim, data).model_dump(mode="json")
    return outcome, result.best_epoch, model
