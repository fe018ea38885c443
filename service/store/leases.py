"""Jobs as workers see them: claim with a lease, record epochs, renew, release, finish.

Every worker-side write is guarded by the lease (`held`): a delivery that lost its claim can
never write, and learns so from `LeaseLost`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from service.specs import BUILTIN_PREFIX, TERMINAL_STATUSES, CrossValidationSummary, EpochMetrics, JobSpec
from service.store.artifacts import StoredObject
from service.store.base import StoreBase
from service.store.checkpoints import CheckpointPolicy, prune_checkpoints, stored_policy
from service.store.errors import LeaseLost, NotFound
from service.store.sweeps import SweepStore
from service.store.models import CheckpointRow, DatasetRow, EpochMetricsRow, JobRow, UTCDateTime
from service.store.rows import metrics_json, metrics_json_from_row, set_best, summary_before_fold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    spec: JobSpec
    dataset_id: str
    dataset_key: str | None  # artifact key of an uploaded dataset; None for builtins
    dataset_sha256: str | None  # the uploaded dataset's recorded sha256 (the model card's); None for builtins
    attempt: int
    resume_checkpoint: str | None  # artifact key of the latest checkpoint; None: start from scratch
    resume_epoch: int  # epochs already done (0 without a checkpoint)
    rungs: tuple[int, ...] = ()  # a sweep trial under ASHA: the epochs whose record_epoch decides on it
    asha_stopped: bool = False  # ASHA stopped it at a rung it has already passed (a resumed trial)


@dataclass(frozen=True)
class EpochAck:
    cancel_requested: bool
    pruned: list[str] = field(default_factory=list)  # keys of the checkpoints removed
    asha_stopped: bool = False  # the epoch was an ASHA rung and the trial did not make the cut


def held(job_id: str, worker_id: str):
    """The lease predicate: the job is running under this worker's claim."""
    return and_(JobRow.id == job_id, JobRow.lease_owner == worker_id, JobRow.status == "running")


def lease_lost(job_id: str, worker_id: str) -> LeaseLost:
    return LeaseLost(f"job {job_id} is no longer held by {worker_id}")


class LeaseStore(SweepStore, StoreBase):
    def claim_job(self, job_id: str, worker_id: str, lease_seconds: float) -> ClaimedJob | None:
        """Take the job for `worker_id` with one compare-and-set, or return None.

        Claimable: queued, or running with an expired lease (its worker died), and not cancelled.
        The same transaction discards history after the latest checkpoint, so the resumed run
        records those epochs again exactly once. Past `max_attempts` the job ends failed instead;
        a running job whose cancel was requested before its worker died ends cancelled.
        """
        now = self._now()
        claimable = and_(
            JobRow.id == job_id,
            or_(JobRow.status == "queued",
                and_(JobRow.status == "running", JobRow.lease_expires_at < now)),
        )
        with self.session_scope(write=True) as session:
            claimed = session.execute(
                update(JobRow)
                .where(claimable, JobRow.cancel_requested.is_(False), JobRow.attempt < self.max_attempts)
                .values(status="running", attempt=JobRow.attempt + 1, lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        started_at=func.coalesce(JobRow.started_at, literal(now, UTCDateTime())))
                .execution_options(synchronize_session=False)
            ).rowcount
            if not claimed:
                self._end_unclaimable(session, claimable, now)
                return None

            row = self._job_row(session, job_id, None, refresh=True)
            latest = session.execute(
                select(CheckpointRow.epoch, CheckpointRow.key).where(CheckpointRow.job_id == job_id)
                .order_by(CheckpointRow.epoch.desc()).limit(1)
            ).one_or_none()
            resume_epoch = latest.epoch if latest else 0
            session.execute(
                delete(EpochMetricsRow).where(EpochMetricsRow.job_id == job_id, EpochMetricsRow.epoch > resume_epoch)
                .execution_options(synchronize_session=False)
            )
            self._rewind_summary(session, row, resume_epoch)

            dataset_key = dataset_sha256 = None
            if not row.dataset_id.startswith(BUILTIN_PREFIX):
                dataset = session.get(DatasetRow, row.dataset_id)
                # a missing row/object fails the job in the worker, with the reason, rather than here
                dataset_key = dataset.key if dataset else self.dataset_key(row.dataset_id)
                dataset_sha256 = dataset.sha256 if dataset else None
            try:
                spec = JobSpec.model_validate(row.spec)
            except ValidationError as error:  # e.g. caps tightened since the job was accepted
                row.status, row.stop_reason, row.finished_at, row.lease_expires_at = "failed", "error", now, None
                row.error = f"the stored job spec is no longer valid: {error}"
                return None
            return ClaimedJob(
                job_id=job_id, spec=spec, dataset_id=row.dataset_id, dataset_key=dataset_key,
                dataset_sha256=dataset_sha256,
                attempt=row.attempt, resume_checkpoint=latest.key if latest else None,
                resume_epoch=resume_epoch, rungs=self._trial_rungs(session, row.sweep_id, row.epochs),
                asha_stopped=row.sweep_id is not None and self._stopped_at_rung(session, job_id, resume_epoch),
            )

    def _end_unclaimable(self, session: Session, claimable, now: datetime) -> None:
        """After a lost claim: end the job if it can never be claimed again."""
        session.execute(
            update(JobRow).where(claimable, JobRow.cancel_requested.is_(True))
            .values(status="cancelled", stop_reason="cancelled", finished_at=now, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(JobRow).where(claimable, JobRow.attempt >= self.max_attempts)
            .values(status="failed", stop_reason="error", finished_at=now, lease_expires_at=None,
                    error=f"gave up after {self.max_attempts} attempts: the worker running the job "
                          "stopped without finishing it (crash or lost lease)")
            .execution_options(synchronize_session=False)
        )

    def _rewind_summary(self, session: Session, row: JobRow, epoch: int) -> None:
        """Point progress, latest and best metrics at what the kept history says."""
        latest = session.scalars(
            select(EpochMetricsRow).where(EpochMetricsRow.job_id == row.id, EpochMetricsRow.epoch == epoch)
        ).one_or_none()
        best = session.scalars(
            select(EpochMetricsRow).where(EpochMetricsRow.job_id == row.id, EpochMetricsRow.is_best.is_(True))
            .order_by(EpochMetricsRow.epoch.desc()).limit(1)
        ).one_or_none()
        row.progress_epoch = epoch
        row.latest_metrics = metrics_json_from_row(latest) if latest else None
        # the checkpoint's fold is unfinished again (its end is recorded with the next fold's first epoch)
        resumed_fold = latest.fold if latest is not None and latest.fold is not None else 0
        row.cross_validation = summary_before_fold(row.cross_validation, resumed_fold)
        set_best(row, best.epoch if best else None, metrics_json_from_row(best) if best else None)

    def record_epoch(self, job_id: str, worker_id: str, metrics: EpochMetrics, *, is_best: bool,
                     checkpoint: StoredObject | None = None, lease_seconds: float,
                     checkpoint_policy: CheckpointPolicy | None = None,
                     cross_validation: CrossValidationSummary | None = None) -> EpochAck:
        """One transaction: metrics row, progress, latest/best metrics, checkpoint row (an object
        already complete in the artifact store), lease renewal, checkpoint pruning (by
        `checkpoint_policy`, else the job's stored spec), and a cross-validated job's summary when
        given (it changes as folds finish). Pruned objects are deleted after the commit. Raises
        LeaseLost."""
        now = self._now()
        values = metrics_json(metrics)
        with self.session_scope(write=True) as session:
            job_values: dict[str, Any] = dict(
                progress_epoch=metrics.epoch, latest_metrics=values,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            if cross_validation is not None:
                job_values["cross_validation"] = cross_validation.model_dump(mode="json")
            if is_best:
                job_values.update(best_epoch=metrics.epoch, best_metrics=values,
                                  best_val_loss=values["val_loss"], best_val_accuracy=values["val_accuracy"])
            held_row = session.execute(
                update(JobRow).where(held(job_id, worker_id))
                .values(**job_values).returning(JobRow.cancel_requested, JobRow.sweep_id, JobRow.epochs)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if held_row is None:
                raise lease_lost(job_id, worker_id)
            cancel, sweep_id, epochs = held_row
            session.add(EpochMetricsRow(job_id=job_id, is_best=is_best, created_at=now, **values))
            asha_stopped = sweep_id is not None and self._asha_stops(session, sweep_id, job_id, metrics.epoch,
                                                                     epochs, values)
            pruned: list[str] = []
            if checkpoint is not None:
                session.add(CheckpointRow(job_id=job_id, epoch=metrics.epoch, key=checkpoint.key,
                                          size_bytes=checkpoint.size_bytes, sha256=checkpoint.sha256,
                                          is_best=is_best, created_at=now))
                session.flush()
                pruned = prune_checkpoints(session, job_id, checkpoint_policy or stored_policy(session, job_id))
        self.delete_objects(pruned)
        return EpochAck(cancel_requested=bool(cancel), pruned=pruned, asha_stopped=asha_stopped)

    def delete_objects(self, keys: list[str]) -> None:
        """Delete objects whose rows are gone; one that cannot be deleted now is left to the orphan sweep."""
        for key in keys:
            try:
                self.artifacts.delete(key)
            except Exception as error:  # noqa: BLE001 - the row is already gone: an orphan at worst
                log.warning("could not delete artifact %s (%s); the orphan sweep will", key, error)

    def dispatchable_jobs(self, *, queued_before: datetime, limit: int = 100) -> list[str]:
        """Ids a reconciler should (re-)enqueue: queued since before `queued_before` (the message may
        be lost) and running with an expired lease (the worker died). Claims stay the only guard:
        enqueuing a job twice is harmless."""
        now = self._now()
        query = (
            select(JobRow.id)
            .where(or_(and_(JobRow.status == "queued", JobRow.created_at < queued_before),
                       and_(JobRow.status == "running", JobRow.lease_expires_at < now)))
            .order_by(JobRow.created_at, JobRow.id).limit(limit)
        )
        with self.session_scope() as session:
            return list(session.scalars(query))

    def cancel_requested(self, job_id: str, worker_id: str | None = None) -> bool:
        """Whether a cancel was requested. With `worker_id`, also raises LeaseLost when that
        worker no longer holds the job (a read: the cheap check between batches)."""
        with self.session_scope() as session:
            row = session.execute(
                select(JobRow.cancel_requested, JobRow.lease_owner, JobRow.status).where(JobRow.id == job_id)
            ).one_or_none()
        if row is None:
            raise NotFound("job", job_id)
        if worker_id is not None and (row.lease_owner != worker_id or row.status != "running"):
            raise lease_lost(job_id, worker_id)
        return bool(row.cancel_requested)

    def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease inside a long epoch; returns cancel_requested. Raises LeaseLost."""
        now = self._now()
        with self.session_scope(write=True) as session:
            cancel = session.execute(
                update(JobRow).where(held(job_id, worker_id))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds)).returning(JobRow.cancel_requested)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
        if cancel is None:
            raise lease_lost(job_id, worker_id)
        return bool(cancel)

    def release_job(self, job_id: str, worker_id: str) -> str:
        """Hand a held job back (its worker is shutting down cleanly): queued again, this attempt
        not counted, so the next claim resumes from the latest checkpoint without using up
        max_attempts. A job whose cancel was requested ends cancelled instead. Returns the new
        status; raises LeaseLost."""
        with self.session_scope(write=True) as session:
            released = session.execute(
                update(JobRow).where(held(job_id, worker_id), JobRow.cancel_requested.is_(False))
                .values(status="queued", attempt=JobRow.attempt - 1, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if released:
                return "queued"
            cancelled = session.execute(
                update(JobRow).where(held(job_id, worker_id), JobRow.cancel_requested.is_(True))
                .values(status="cancelled", stop_reason="cancelled", finished_at=self._now(), lease_expires_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
        if not cancelled:
            raise lease_lost(job_id, worker_id)
        return "cancelled"

    def finish_job(self, job_id: str, worker_id: str, *, status: str, stop_reason: str,
                   error: str | None = None, best_epoch: int | None = None,
                   model: StoredObject | None = None, model_card: dict[str, Any] | None = None) -> list[str]:
        """End a job this worker holds; raises LeaseLost otherwise (another delivery owns it now).
        `model` is an object already complete in the artifact store. A sweep's trial frees its
        place: the same transaction releases held trials, whose job ids are returned to enqueue."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish_job needs a terminal status, not {status!r}")
        values: dict[str, Any] = dict(status=status, stop_reason=stop_reason, error=error,
                                      finished_at=self._now(), lease_expires_at=None)
        if model is not None:
            values.update(model_key=model.key, model_size_bytes=model.size_bytes, model_sha256=model.sha256,
                          model_card=model_card)
        with self.session_scope(write=True) as session:
            finished = session.execute(
                update(JobRow).where(held(job_id, worker_id))
                .values(**values).returning(JobRow.sweep_id, JobRow.owner).execution_options(synchronize_session=False)
            ).one_or_none()
            if finished is None:
                raise lease_lost(job_id, worker_id)
            released = self._release_trials(session, finished.owner) if finished.sweep_id is not None else []
            if best_epoch is not None:
                best = session.scalars(
                    select(EpochMetricsRow).where(EpochMetricsRow.job_id == job_id, EpochMetricsRow.epoch == best_epoch)
                ).one_or_none()
                row = self._job_row(session, job_id, None, refresh=True)
                set_best(row, best_epoch, metrics_json_from_row(best) if best else row.best_metrics)
        return released
