"""The reads live event streams make (service.api.streams), kept apart from the Store's methods.

Functions over a Store's sessions; rows never leave here. `job_signatures` is the one query an API
process runs per poll for all the jobs it streams; `epochs_after` is what a stream sends next.
"""
from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select

from service.specs import EpochMetrics
from service.store.models import EpochMetricsRow, JobRow

METRIC_FIELDS = tuple(EpochMetrics.model_fields)  # epoch, train_loss, ..., seconds

JobSignature = tuple  # (status, progress_epoch, cancel_requested, attempt): changes whenever a stream has news


def job_signatures(store, job_ids: Collection[str]) -> dict[str, JobSignature]:
    """{job id: signature} of the jobs that exist, in one query."""
    if not job_ids:
        return {}
    query = select(JobRow.id, JobRow.status, JobRow.progress_epoch, JobRow.cancel_requested, JobRow.attempt) \
        .where(JobRow.id.in_(list(job_ids)))
    with store.session_scope() as session:
        return {row[0]: tuple(row[1:]) for row in session.execute(query)}


def epochs_after(store, job_id: str, after: int, limit: int) -> list[EpochMetrics]:
    """Recorded epochs numbered above `after`, in order, at most `limit` of them."""
    columns = [getattr(EpochMetricsRow, name) for name in METRIC_FIELDS]
    query = select(*columns).where(EpochMetricsRow.job_id == job_id, EpochMetricsRow.epoch > after) \
        .order_by(EpochMetricsRow.epoch).limit(limit)
    with store.session_scope() as session:
        rows = session.execute(query).all()
    return [EpochMetrics.model_construct(**dict(zip(METRIC_FIELDS, row))) for row in rows]
