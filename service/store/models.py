"""SQLAlchemy 2.0 tables. ORM rows stay inside service.store; callers get service.specs models."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer,
    MetaData, String, Text, TypeDecorator, UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are fixed so Alembic migrations can refer to them on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(32)  # uuid4().hex
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")  # None is SQL NULL
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out on both databases.

    SQLite has no time zones: values are stored as naive UTC text of fixed width, so SQL
    comparisons (lease expiry, keyset cursors) order correctly.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    rows: Mapped[int] = mapped_column(Integer)
    features: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(16))
    classes: Mapped[list[Any]] = mapped_column(JSONType)
    outputs: Mapped[int] = mapped_column(Integer, default=1)
    has_validation: Mapped[bool] = mapped_column(Boolean, default=False)
    val_rows: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str] = mapped_column(String(300))  # of the object in the artifact store
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("task IN ('classification', 'regression')", name="task"),
        Index("ix_datasets_owner_created", "owner", "created_at", "id"),
        Index("ix_datasets_created", "created_at", "id"),
    )


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # "builtin:<name>" or an uploaded dataset's id; no foreign key because builtins have no row
    dataset_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    epochs: Mapped[int] = mapped_column(Integer)
    progress_epoch: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # copies of best_metrics' values, as columns so listing can order by them with an index
    best_val_loss: Mapped[float | None] = mapped_column(Float)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    model_key: Mapped[str | None] = mapped_column(String(300))  # of the object in the artifact store
    model_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_card: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # service.specs.ModelCard (0004)
    # cross-validated jobs: service.specs.CrossValidationSummary, updated as folds finish (0005)
    cross_validation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # a sweep's trial (0006): its sweep, place in the draw and drawn parameters
    sweep_id: Mapped[str | None] = mapped_column(ID)  # no foreign key: 0006 adds it without copying `jobs`
    trial_index: Mapped[int | None] = mapped_column(Integer)
    trial_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),  # claim / reconciler sweeps
        Index("ix_jobs_name", "name"),
        Index("ix_jobs_dataset", "dataset_id"),
        Index("ix_jobs_best_val_loss", "best_val_loss", "id"),
        Index("ix_jobs_best_val_accuracy", "best_val_accuracy", "id"),
        # one job per trial: releasing a trial twice fails instead of running it twice
        Index("ix_jobs_sweep_trial", "sweep_id", "trial_index", unique=True),
    )


class SweepRow(Base):
    """A sweep: its spec and drawn trials. Trials become jobs when released (`released` of them
    so far, in index order), at most max_concurrent queued or running at a time."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)  # service.specs.SweepSpec, mode filled in
    dataset_id: Mapped[str] = mapped_column(String(64))
    # [{"params": {...}, "spec": {resolved JobSpec}}], in draw order
    trials: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    trial_count: Mapped[int] = mapped_column(Integer)
    released: Mapped[int] = mapped_column(Integer, default=0)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    asha_grace_period: Mapped[int | None] = mapped_column(Integer)
    asha_reduction_factor: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("mode IN ('min', 'max')", name="mode"),
        Index("ix_sweeps_owner_created", "owner", "created_at", "id"),
        Index("ix_sweeps_created", "created_at", "id"),
    )


class SweepRungRow(Base):
    """A trial's result at an ASHA rung and the decision taken on it, once: a retried epoch reads
    the same decision back."""

    __tablename__ = "sweep_rungs"

    sweep_id: Mapped[str] = mapped_column(ID, ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)  # the epoch
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    reward: Mapped[float | None] = mapped_column(Float)  # metric, × -1 for mode min; NULL: not measured
    continued: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobTagRow(Base):
    """One row per (job, tag): a tag filter is an indexed lookup on SQLite and PostgreSQL alike."""

    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_job_tags_tag", "tag", "job_id"),)


class EpochMetricsRow(Base):
    __tablename__ = "epoch_metrics"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    val_r2: Mapped[float | None] = mapped_column(Float)
    val_mae: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)  # lets a resume recompute the best epoch
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # cross-validated jobs (0005): the training (0..k-1, k for the refit) and the epoch within it;
    # `epoch` stays job-wide, so (job_id, epoch) is unique across folds too. Other jobs: both NULL
    # (NULLs are distinct in a unique constraint on both databases, so they never collide)
    fold: Mapped[int | None] = mapped_column(Integer)
    fold_epoch: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),
                      # one row per epoch of a fold; its index serves GET .../history?fold=
                      UniqueConstraint("job_id", "fold", "fold_epoch", name="uq_epoch_metrics_job_fold_epoch"))


class CheckpointRow(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(300))  # of the object in the artifact store
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_checkpoints_job_epoch"),)


class ApiKeyRow(Base):
    """An API key: the token is `bpk_<id>_<secret>`; only the secret's sha256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public: shown by `backprop keys list`
    owner: Mapped[str] = mapped_column(String(64))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_api_keys_owner", "owner", "created_at"),)
