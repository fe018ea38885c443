"""Jobs as the API sees them: submit, read, list, history, cancel, checkpoints and the model."""
from __future__ import annotations

from sqlalchemy import exists, func, select, text, update
from sqlalchemy.orm import Session

from service.specs import BUILTIN_PREFIX, CheckpointPublic, EpochMetrics, JobPage, JobPublic, JobSpec, planned_epochs
from service.store.artifacts import StoredObject
from service.store.base import StoreBase, owned_row
from service.store.cursors import decode_cursor, encode_cursor, rows_after
from service.store.datasets import DatasetStore, builtin_public
from service.store.errors import Conflict, NotFound, QueueFull
from service.store.models import CheckpointRow, EpochMetricsRow, JobRow, JobTagRow
from service.store.rows import METRIC_FIELDS, job_public

ORDERINGS = ("created_at", "best_val_loss", "best_val_accuracy")
MAX_PAGE = 1000


class JobStore(DatasetStore, StoreBase):
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
                builtin_public(dataset_id)  # raises NotFound for unknown names
            else:
                self._dataset_row(session, dataset_id, owner)
            if max_queued is not None:
                self._check_queue_room(session, owner, max_queued)
            return job_public(self._insert_job(session, job_id, owner, spec.model_dump(mode="json"), dataset_id))

    def _insert_job(self, session: Session, job_id: str, owner: str | None, spec: dict, dataset_id: str,
                    **trial: object) -> JobRow:
        """A queued job's row and tags (`spec` resolved, as JSON); `trial`: sweep_id, trial_index, trial_params."""
        row = JobRow(
            id=job_id, owner=owner, name=spec["name"], spec=spec, dataset_id=dataset_id, status="queued",
            epochs=planned_epochs(spec), progress_epoch=0, attempt=0, cancel_requested=False,
            created_at=self._now(),
            **trial,
        )
        session.add(row)
        session.flush()  # the job row before its tags (foreign key)
        session.add_all(JobTagRow(job_id=job_id, tag=tag) for tag in dict.fromkeys(spec["tags"]))
        return row

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
            return job_public(self._job_row(session, job_id, owner))

    def list_jobs(self, owner: str | None = None, status: str | None = None, tag: str | None = None,
                  name: str | None = None, dataset: str | None = None, order_by: str = "created_at",
                  descending: bool = True, limit: int = 50, cursor: str | None = None,
                  sweep_id: str | None = None) -> JobPage:
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
        if sweep_id is not None:
            query = query.where(JobRow.sweep_id == sweep_id)
        if tag is not None:
            query = query.where(exists().where(JobTagRow.job_id == JobRow.id, JobTagRow.tag == tag))
        if cursor is not None:
            value, last_id = decode_cursor(cursor, order_by, descending)
            query = query.where(rows_after(column, value, last_id, descending, nullable=order_by != "created_at"))
        if descending:
            query = query.order_by(column.desc().nulls_last(), JobRow.id.desc())
        else:
            query = query.order_by(column.asc().nulls_last(), JobRow.id.asc())
        query = query.limit(limit + 1)
        with self.session_scope() as session:
            rows = list(session.scalars(query))
            items = [job_public(row) for row in rows[:limit]]
            next_cursor = None
            if len(rows) > limit:
                last = rows[limit - 1]
                next_cursor = encode_cursor(order_by, descending, getattr(last, order_by), last.id)
        return JobPage(items=items, next_cursor=next_cursor)

    def history(self, job_id: str, owner: str | None = None, *, fold: int | None = None) -> list[EpochMetrics]:
        fields, rows = self.history_rows(job_id, owner, fold=fold)
        return [EpochMetrics.model_construct(**dict(zip(fields, row))) for row in rows]

    def history_rows(self, job_id: str, owner: str | None = None, *,
                     fold: int | None = None) -> tuple[tuple[str, ...], list[tuple]]:
        """The history as (field names, plain tuples in epoch order): the fast path for long
        histories (CSV, hand-built JSON), skipping one Pydantic object per epoch. With `fold`,
        only that fold's epochs (a cross-validated job's; none for another job)."""
        columns = [getattr(EpochMetricsRow, name) for name in METRIC_FIELDS]
        with self.session_scope() as session:
            exists_for_owner = select(JobRow.id).where(JobRow.id == job_id)
            if owner is not None:
                exists_for_owner = exists_for_owner.where(JobRow.owner == owner)
            if session.scalar(exists_for_owner) is None:
                raise NotFound("job", job_id)
            query = select(*columns).where(EpochMetricsRow.job_id == job_id)
            if fold is not None:
                query = query.where(EpochMetricsRow.fold == fold)
            rows = session.execute(query.order_by(EpochMetricsRow.epoch)).all()
        return METRIC_FIELDS, [tuple(row) for row in rows]

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
            return job_public(self._job_row(session, job_id, owner, refresh=True))

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

    def model_file(self, job_id: str, owner: str | None = None) -> StoredObject:
        """The job's model object (key, size, sha256); Conflict while the job has none."""
        with self.session_scope() as session:
            row = self._job_row(session, job_id, owner)
            if row.model_key is None or row.model_sha256 is None:
                raise Conflict(f"job {job_id} has no model (status {row.status})")
            return StoredObject(row.model_key, row.model_size_bytes, row.model_sha256)

    def _job_row(self, session: Session, job_id: str, owner: str | None, *, refresh: bool = False) -> JobRow:
        return owned_row(session, JobRow, "job", job_id, owner, refresh=refresh)
