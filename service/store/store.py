"""The Store: every read and write of datasets, jobs, history and checkpoints.

Methods take and return `service.specs` models and plain values; ORM rows never leave this
module. Each method is one transaction (`session_scope`). Worker-side writes are guarded by the
job's lease (`lease_owner`), so a delivery that lost its claim can never write.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import and_, delete, exists, func, literal, or_, select, text, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.specs import (
    BUILTIN_DATASETS, TERMINAL_STATUSES, CheckpointPublic, DatasetInfo, DatasetPublic, EpochMetrics,
    JobPage, JobPublic, JobSpec, Progress,
)
from service.store.db import Database
from service.store.errors import Conflict, InvalidCursor, LeaseLost, NotFound, QueueFull
from service.store.files import file_sha256, write_npz_atomic
from service.store.models import CheckpointRow, DatasetRow, EpochMetricsRow, JobRow, JobTagRow, UTCDateTime

BUILTIN_PREFIX = "builtin:"
ORDERINGS = ("created_at", "best_val_loss", "best_val_accuracy")
MAX_PAGE = 1000
_METRIC_FIELDS = tuple(EpochMetrics.model_fields)  # epoch, train_loss, ..., seconds


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_hex_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ClaimedJob:
    job_id: str
    spec: JobSpec
    dataset_id: str
    dataset_path: Path | None  # None for builtins
    attempt: int
    resume_checkpoint: Path | None  # absolute; None when training starts from scratch
    resume_epoch: int  # epochs already done (0 without a checkpoint)


@dataclass(frozen=True)
class EpochAck:
    cancel_requested: bool
    pruned: list[Path] = field(default_factory=list)


class Store:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None,
                 new_id: Callable[[], str] | None = None):
        self.settings = settings
        self.artifact_dir = Path(settings.artifact_dir).resolve()
        self.max_attempts = settings.max_attempts
        self._db = Database(settings.database_url)
        self._clock = clock or utcnow
        self._new_id = new_id or new_hex_id
        self._checkpoint_policy: dict[str, tuple[int, bool]] = {}  # job id -> (keep_last, keep_best)

    # ------------------------------------------------------------ plumbing

    @property
    def engine(self):
        return self._db.engine

    @contextmanager
    def session_scope(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on error (see service.store.db)."""
        with self._db.session_scope(write=write) as session:
            yield session

    def dispose(self, *, close: bool = True) -> None:
        self._db.dispose(close=close)

    def ping(self) -> None:
        """Raises if the database cannot answer."""
        with self.session_scope() as session:
            session.execute(text("SELECT 1"))

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return aware datetimes")
        return now

    def _relative(self, path: Path) -> str:
        absolute = Path(path).resolve()
        try:
            return absolute.relative_to(self.artifact_dir).as_posix()
        except ValueError:
            raise ValueError(f"{path} is outside ARTIFACT_DIR {self.artifact_dir}") from None

    # ------------------------------------------------------------ artifact paths (built from ids only)

    def dataset_path(self, dataset_id: str) -> Path:
        return self.artifact_dir / "datasets" / f"{dataset_id}.npz"

    def checkpoint_path(self, job_id: str, epoch: int) -> Path:
        return self.artifact_dir / "jobs" / job_id / "checkpoints" / f"epoch-{epoch:06d}.npz"

    def model_path(self, job_id: str) -> Path:
        return self.artifact_dir / "jobs" / job_id / "model.npz"

    # ------------------------------------------------------------ datasets

    def create_dataset(self, *, owner: str | None, name: str, info: DatasetInfo,
                       arrays: dict[str, np.ndarray]) -> DatasetPublic:
        dataset_id = self._new_id()
        path = self.dataset_path(dataset_id)
        size, sha256 = write_npz_atomic(path, arrays)
        row = DatasetRow(
            id=dataset_id, owner=owner, name=name, rows=info.rows, features=info.features, task=info.task,
            classes=list(info.classes), outputs=info.outputs, has_validation=info.has_validation,
            val_rows=info.val_rows, path=self._relative(path), size_bytes=size, sha256=sha256,
            created_at=self._now(),
        )
        try:
            with self.session_scope(write=True) as session:
                session.add(row)
                session.flush()
                public = _dataset_public(row)
        except BaseException:
            path.unlink(missing_ok=True)  # no row, no file
            raise
        return public

    def get_dataset(self, dataset_id: str, owner: str | None = None) -> DatasetPublic:
        if dataset_id.startswith(BUILTIN_PREFIX):
            return _builtin_public(dataset_id)
        with self.session_scope() as session:
            return _dataset_public(self._dataset_row(session, dataset_id, owner))

    def list_datasets(self, owner: str | None = None) -> list[DatasetPublic]:
        """Builtins first (by name), then uploads, newest first."""
        builtins = [_builtin_public(BUILTIN_PREFIX + name) for name in sorted(BUILTIN_DATASETS)]
        query = select(DatasetRow).order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
        if owner is not None:
            query = query.where(DatasetRow.owner == owner)
        with self.session_scope() as session:
            uploads = [_dataset_public(row) for row in session.scalars(query)]
        return builtins + uploads

    def dataset_info(self, dataset_id: str, owner: str | None = None) -> DatasetInfo:
        public = self.get_dataset(dataset_id, owner)
        return DatasetInfo.model_validate(public.model_dump(include=set(DatasetInfo.model_fields)))

    def _dataset_row(self, session: Session, dataset_id: str, owner: str | None) -> DatasetRow:
        row = session.get(DatasetRow, dataset_id)
        if row is None or (owner is not None and row.owner != owner):
            raise NotFound("dataset", dataset_id)
        return row

    # ------------------------------------------------------------ jobs, API side

    def create_job(self, *, owner: str | None, spec: JobSpec, dataset_id: str,
                   max_queued: int | None = None) -> JobPublic:
        """Insert a queued job. `spec` must already be resolved against its dataset.

        With `max_queued`, raises QueueFull instead when `owner` already has that many queued jobs;
        the count and the insert are one serialized step (BEGIN IMMEDIATE on SQLite, a per-owner
        advisory lock on PostgreSQL), so concurrent submissions cannot overshoot the cap.
        """
        expected = BUILTIN_PREFIX + spec.dataset.builtin if spec.dataset.builtin else spec.dataset.id
        if dataset_id != expected:
            raise ValueError(f"dataset_id {dataset_id!r} does not match the spec's dataset {expected!r}")
        if spec.loss is None or spec.model.output_activation is None:
            raise ValueError("create_job needs a resolved spec (service.specs.resolve_spec)")
        job_id = self._new_id()
        with self.session_scope(write=True) as session:
            if dataset_id.startswith(BUILTIN_PREFIX):
                _builtin_public(dataset_id)  # raises NotFound for unknown names
            else:
                self._dataset_row(session, dataset_id, owner)
            if max_queued is not None:
                self._check_queue_room(session, owner, max_queued)
            row = JobRow(
                id=job_id, owner=owner, name=spec.name, spec=spec.model_dump(mode="json"),
                dataset_id=dataset_id, status="queued", epochs=spec.epochs, progress_epoch=0, attempt=0,
                cancel_requested=False, created_at=self._now(),
            )
            session.add(row)
            session.flush()  # the job row before its tags (foreign key)
            session.add_all(JobTagRow(job_id=job_id, tag=tag) for tag in dict.fromkeys(spec.tags))
            return _job_public(row)

    def _check_queue_room(self, session: Session, owner: str | None, max_queued: int) -> None:
        if not self._db.is_sqlite:  # SQLite: the write transaction already holds the database lock
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"queued-jobs:{owner}"})
        queued = session.scalar(
            select(func.count()).select_from(JobRow)
            .where(JobRow.owner.is_(None) if owner is None else JobRow.owner == owner, JobRow.status == "queued")
        )
        if queued >= max_queued:
            raise QueueFull(owner, max_queued)

    def get_job(self, job_id: str, owner: str | None = None) -> JobPublic:
        with self.session_scope() as session:
            return _job_public(self._job_row(session, job_id, owner))

    def list_jobs(self, owner: str | None = None, status: str | None = None, tag: str | None = None,
                  name: str | None = None, dataset: str | None = None, order_by: str = "created_at",
                  descending: bool = True, limit: int = 50, cursor: str | None = None) -> JobPage:
        """Filters are exact matches. Ordering by a best_* metric puts jobs without it last.

        Keyset pagination over (sort value, id): pages stay stable while jobs are added.
        """
        if order_by not in ORDERINGS:
            raise ValueError(f"order_by must be one of {', '.join(ORDERINGS)}")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        column = getattr(JobRow, order_by)
        query = select(JobRow)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if status is not None:
            query = query.where(JobRow.status == status)
        if name is not None:
            query = query.where(JobRow.name == name)
        if dataset is not None:
            query = query.where(JobRow.dataset_id == dataset)
        if tag is not None:
            query = query.where(exists().where(JobTagRow.job_id == JobRow.id, JobTagRow.tag == tag))
        if cursor is not None:
            value, last_id = _decode_cursor(cursor, order_by, descending)
            query = query.where(_after(column, value, last_id, descending, nullable=order_by != "created_at"))
        if descending:
            query = query.order_by(column.desc().nulls_last(), JobRow.id.desc())
        else:
            query = query.order_by(column.asc().nulls_last(), JobRow.id.asc())
        query = query.limit(limit + 1)
        with self.session_scope() as session:
            rows = list(session.scalars(query))
            items = [_job_public(row) for row in rows[:limit]]
            next_cursor = None
            if len(rows) > limit:
                last = rows[limit - 1]
                next_cursor = _encode_cursor(order_by, descending, getattr(last, order_by), last.id)
        return JobPage(items=items, next_cursor=next_cursor)

    def history(self, job_id: str, owner: str | None = None) -> list[EpochMetrics]:
        fields, rows = self.history_rows(job_id, owner)
        return [EpochMetrics.model_construct(**dict(zip(fields, row))) for row in rows]

    def history_rows(self, job_id: str, owner: str | None = None) -> tuple[tuple[str, ...], list[tuple]]:
        """The history as (field names, plain tuples in epoch order): the fast path for long
        histories (CSV, hand-built JSON), skipping one Pydantic object per epoch."""
        columns = [getattr(EpochMetricsRow, name) for name in _METRIC_FIELDS]
        with self.session_scope() as session:
            exists_for_owner = select(JobRow.id).where(JobRow.id == job_id)
            if owner is not None:
                exists_for_owner = exists_for_owner.where(JobRow.owner == owner)
            if session.scalar(exists_for_owner) is None:
                raise NotFound("job", job_id)
            rows = session.execute(
                select(*columns).where(EpochMetricsRow.job_id == job_id).order_by(EpochMetricsRow.epoch)
            ).all()
        return _METRIC_FIELDS, [tuple(row) for row in rows]

    def request_cancel(self, job_id: str, owner: str | None = None) -> JobPublic:
        """queued → cancelled at once; running → cancel_requested (the worker stops); terminal → unchanged."""
        now = self._now()
        with self.session_scope(write=True) as session:
            self._job_row(session, job_id, owner)
            cancelled = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued")
                .values(status="cancelled", stop_reason="cancelled", cancel_requested=True, finished_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not cancelled:
                session.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                    .values(cancel_requested=True).execution_options(synchronize_session=False)
                )
            return _job_public(self._job_row(session, job_id, owner, refresh=True))

    def list_checkpoints(self, job_id: str, owner: str | None = None) -> list[CheckpointPublic]:
        with self.session_scope() as session:
            self._job_row(session, job_id, owner)
            rows = session.scalars(
                select(CheckpointRow).where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.epoch)
            )
            return [
                CheckpointPublic(epoch=row.epoch, created_at=row.created_at, is_best=row.is_best,
                                 size_bytes=row.size_bytes, sha256=row.sha256)
                for row in rows
            ]

    def model_file(self, job_id: str, owner: str | None = None) -> tuple[Path, str]:
        """(absolute path, sha256) of the job's model; Conflict while the job has none."""
        with self.session_scope() as session:
            row = self._job_row(session, job_id, owner)
            if row.model_path is None or row.model_sha256 is None:
                raise Conflict(f"job {job_id} has no model (status {row.status})")
            return self.artifact_dir / row.model_path, row.model_sha256

    def _job_row(self, session: Session, job_id: str, owner: str | None, *, refresh: bool = False) -> JobRow:
        query = select(JobRow).where(JobRow.id == job_id)
        if refresh:
            query = query.execution_options(populate_existing=True)
        row = session.scalars(query).one_or_none()
        if row is None or (owner is not None and row.owner != owner):
            raise NotFound("job", job_id)
        return row

    # ------------------------------------------------------------ jobs, worker side

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
                select(CheckpointRow.epoch, CheckpointRow.path).where(CheckpointRow.job_id == job_id)
                .order_by(CheckpointRow.epoch.desc()).limit(1)
            ).one_or_none()
            resume_epoch = latest.epoch if latest else 0
            session.execute(
                delete(EpochMetricsRow).where(EpochMetricsRow.job_id == job_id, EpochMetricsRow.epoch > resume_epoch)
                .execution_options(synchronize_session=False)
            )
            self._rewind_summary(session, row, resume_epoch)

            dataset_path = None
            if not row.dataset_id.startswith(BUILTIN_PREFIX):
                dataset = session.get(DatasetRow, row.dataset_id)
                # a missing row/file fails the job in the worker, with the reason, rather than here
                dataset_path = self.artifact_dir / dataset.path if dataset else self.dataset_path(row.dataset_id)
            try:
                spec = JobSpec.model_validate(row.spec)
            except ValidationError as error:  # e.g. caps tightened since the job was accepted
                row.status, row.stop_reason, row.finished_at, row.lease_expires_at = "failed", "error", now, None
                row.error = f"the stored job spec is no longer valid: {error}"
                return None
            self._checkpoint_policy[job_id] = (spec.checkpoint.keep_last, spec.checkpoint.keep_best)
            return ClaimedJob(
                job_id=job_id, spec=spec, dataset_id=row.dataset_id, dataset_path=dataset_path,
                attempt=row.attempt, resume_checkpoint=self.artifact_dir / latest.path if latest else None,
                resume_epoch=resume_epoch,
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
        row.latest_metrics = _metrics_json_from_row(latest) if latest else None
        _set_best(row, best.epoch if best else None, _metrics_json_from_row(best) if best else None)

    def record_epoch(self, job_id: str, worker_id: str, metrics: EpochMetrics, *, is_best: bool,
                     checkpoint_path: Path | None = None, lease_seconds: float) -> EpochAck:
        """One transaction: metrics row, progress, latest/best metrics, checkpoint row, lease renewal,
        checkpoint pruning. Pruned files are unlinked after the commit. Raises LeaseLost."""
        now = self._now()
        values = _metrics_json(metrics)
        checkpoint = None
        if checkpoint_path is not None:
            checkpoint_path = Path(checkpoint_path)
            # hashed before the transaction so the write lock is held briefly
            checkpoint = (self._relative(checkpoint_path), checkpoint_path.stat().st_size, file_sha256(checkpoint_path))
        with self.session_scope(write=True) as session:
            job_values: dict[str, Any] = dict(
                progress_epoch=metrics.epoch, latest_metrics=values,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            if is_best:
                job_values.update(best_epoch=metrics.epoch, best_metrics=values,
                                  best_val_loss=values["val_loss"], best_val_accuracy=values["val_accuracy"])
            cancel = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == worker_id, JobRow.status == "running")
                .values(**job_values).returning(JobRow.cancel_requested)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if cancel is None:
                raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
            session.add(EpochMetricsRow(job_id=job_id, is_best=is_best, created_at=now, **values))
            pruned: list[Path] = []
            if checkpoint is not None:
                relative, size, sha256 = checkpoint
                session.add(CheckpointRow(job_id=job_id, epoch=metrics.epoch, path=relative, size_bytes=size,
                                          sha256=sha256, is_best=is_best, created_at=now))
                session.flush()
                pruned = self._prune_checkpoints(session, job_id)
        for path in pruned:
            path.unlink(missing_ok=True)
        return EpochAck(cancel_requested=bool(cancel), pruned=pruned)

    def _prune_checkpoints(self, session: Session, job_id: str) -> list[Path]:
        keep_last, keep_best = self._policy(session, job_id)
        rows = session.execute(
            select(CheckpointRow.id, CheckpointRow.path, CheckpointRow.is_best)
            .where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.epoch.desc())
        ).all()
        keep = {row.id for row in rows[:keep_last]}
        if keep_best:
            best = next((row for row in rows if row.is_best), None)  # the latest improvement is the best
            if best is not None:
                keep.add(best.id)
        doomed = [row for row in rows if row.id not in keep]
        if doomed:
            session.execute(
                delete(CheckpointRow).where(CheckpointRow.id.in_([row.id for row in doomed]))
                .execution_options(synchronize_session=False)
            )
        return [self.artifact_dir / row.path for row in doomed]

    def _policy(self, session: Session, job_id: str) -> tuple[int, bool]:
        policy = self._checkpoint_policy.get(job_id)
        if policy is None:
            spec = JobSpec.model_validate(session.scalar(select(JobRow.spec).where(JobRow.id == job_id)))
            policy = self._checkpoint_policy[job_id] = (spec.checkpoint.keep_last, spec.checkpoint.keep_best)
        return policy

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
            raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
        return bool(row.cancel_requested)

    def renew_lease(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease inside a long epoch; returns cancel_requested. Raises LeaseLost."""
        now = self._now()
        with self.session_scope(write=True) as session:
            cancel = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == worker_id, JobRow.status == "running")
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds)).returning(JobRow.cancel_requested)
                .execution_options(synchronize_session=False)
            ).scalar_one_or_none()
        if cancel is None:
            raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
        return bool(cancel)

    def release_job(self, job_id: str, worker_id: str) -> str:
        """Hand a held job back (its worker is shutting down cleanly): queued again, this attempt
        not counted, so the next claim resumes from the latest checkpoint without using up
        max_attempts. A job whose cancel was requested ends cancelled instead. Returns the new
        status; raises LeaseLost."""
        held = and_(JobRow.id == job_id, JobRow.lease_owner == worker_id, JobRow.status == "running")
        with self.session_scope(write=True) as session:
            released = session.execute(
                update(JobRow).where(held, JobRow.cancel_requested.is_(False))
                .values(status="queued", attempt=JobRow.attempt - 1, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if released:
                self._checkpoint_policy.pop(job_id, None)
                return "queued"
            cancelled = session.execute(
                update(JobRow).where(held, JobRow.cancel_requested.is_(True))
                .values(status="cancelled", stop_reason="cancelled", finished_at=self._now(), lease_expires_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
        if not cancelled:
            raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
        self._checkpoint_policy.pop(job_id, None)
        return "cancelled"

    def finish_job(self, job_id: str, worker_id: str, *, status: str, stop_reason: str,
                   error: str | None = None, best_epoch: int | None = None,
                   model_path: Path | None = None, model_sha256: str | None = None) -> None:
        """End a job this worker holds; raises LeaseLost otherwise (another delivery owns it now)."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish_job needs a terminal status, not {status!r}")
        if (model_path is None) != (model_sha256 is None):
            raise ValueError("give model_path and model_sha256 together")
        values: dict[str, Any] = dict(status=status, stop_reason=stop_reason, error=error,
                                      finished_at=self._now(), lease_expires_at=None)
        if model_path is not None:
            values.update(model_path=self._relative(Path(model_path)), model_sha256=model_sha256)
        with self.session_scope(write=True) as session:
            held = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == worker_id, JobRow.status == "running")
                .values(**values).execution_options(synchronize_session=False)
            ).rowcount
            if not held:
                raise LeaseLost(f"job {job_id} is no longer held by {worker_id}")
            if best_epoch is not None:
                best = session.scalars(
                    select(EpochMetricsRow).where(EpochMetricsRow.job_id == job_id, EpochMetricsRow.epoch == best_epoch)
                ).one_or_none()
                row = self._job_row(session, job_id, None, refresh=True)
                _set_best(row, best_epoch, _metrics_json_from_row(best) if best else row.best_metrics)
        self._checkpoint_policy.pop(job_id, None)


# ---------------------------------------------------------------- row → public model


def _builtin_public(dataset_id: str) -> DatasetPublic:
    name = dataset_id.removeprefix(BUILTIN_PREFIX)
    info = BUILTIN_DATASETS.get(name)
    if info is None:
        raise NotFound("dataset", dataset_id)
    return DatasetPublic(id=dataset_id, name=name, source="builtin", **info.model_dump())


def _dataset_public(row: DatasetRow) -> DatasetPublic:
    return DatasetPublic(
        id=row.id, name=row.name, source="upload", rows=row.rows, features=row.features, task=row.task,
        classes=row.classes, outputs=row.outputs, has_validation=row.has_validation, val_rows=row.val_rows,
        created_at=row.created_at,
    )


def _job_public(row: JobRow) -> JobPublic:
    spec = JobSpec.model_validate(row.spec)
    return JobPublic(
        id=row.id, name=row.name, tags=list(dict.fromkeys(spec.tags)), status=row.status,
        stop_reason=row.stop_reason, error=row.error,
        progress=Progress(epoch=row.progress_epoch, epochs=row.epochs),
        latest_metrics=EpochMetrics(**row.latest_metrics) if row.latest_metrics else None,
        best_epoch=row.best_epoch,
        best_metrics=EpochMetrics(**row.best_metrics) if row.best_metrics else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        attempt=row.attempt, dataset_id=row.dataset_id, cancel_requested=row.cancel_requested, spec=spec,
    )


def _finite(value: float | None) -> float | None:
    # NaN/inf (a diverged epoch) are stored as NULL: SQLite turns NaN into NULL and JSON has neither
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metrics_json(metrics: EpochMetrics) -> dict[str, Any]:
    return {name: (metrics.epoch if name == "epoch" else _finite(getattr(metrics, name))) for name in _METRIC_FIELDS}


def _metrics_json_from_row(row: EpochMetricsRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _METRIC_FIELDS}


def _set_best(row: JobRow, epoch: int | None, metrics: dict[str, Any] | None) -> None:
    row.best_epoch = epoch
    row.best_metrics = metrics
    row.best_val_loss = metrics.get("val_loss") if metrics else None
    row.best_val_accuracy = metrics.get("val_accuracy") if metrics else None


# ---------------------------------------------------------------- keyset cursors


def _encode_cursor(order_by: str, descending: bool, value: Any, last_id: str) -> str:
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc).isoformat()
    raw = json.dumps([order_by, descending, value, last_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, order_by: str, descending: bool) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_order, cursor_desc, value, last_id = json.loads(raw)
        if order_by == "created_at":
            value = datetime.fromisoformat(value)
        elif value is not None:
            value = float(value)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this API issued") from None
    if cursor_order != order_by or cursor_desc != descending or not isinstance(last_id, str):
        raise InvalidCursor("cursor belongs to another ordering; repeat the query without it")
    return value, last_id


def _after(column, value: Any, last_id: str, descending: bool, *, nullable: bool):
    """Rows strictly after (value, last_id) in the listing order (NULL values last)."""
    beyond = (lambda a, b: a < b) if descending else (lambda a, b: a > b)
    if value is None:
        return and_(column.is_(None), beyond(JobRow.id, last_id))
    condition = or_(beyond(column, value), and_(column == value, beyond(JobRow.id, last_id)))
    return or_(condition, column.is_(None)) if nullable else condition
