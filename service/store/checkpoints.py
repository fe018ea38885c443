"""Which checkpoints a job keeps: the latest `keep_last`, and the best one with `keep_best`."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.specs import JobSpec
from service.store.models import CheckpointRow, JobRow


@dataclass(frozen=True)
class CheckpointPolicy:
    keep_last: int
    keep_best: bool = True

    @classmethod
    def of(cls, spec: JobSpec) -> "CheckpointPolicy":
        return cls(keep_last=spec.checkpoint.keep_last, keep_best=spec.checkpoint.keep_best)


def stored_policy(session: Session, job_id: str) -> CheckpointPolicy:
    """The policy of the job's stored spec (for callers that do not pass one)."""
    return CheckpointPolicy.of(JobSpec.model_validate(session.scalar(select(JobRow.spec).where(JobRow.id == job_id))))


def prune_checkpoints(session: Session, job_id: str, policy: CheckpointPolicy) -> list[str]:
    """Delete the rows the policy no longer keeps; return their artifact keys, whose objects the
    caller removes after the commit."""
    rows = session.execute(
        select(CheckpointRow.id, CheckpointRow.key, CheckpointRow.is_best)
        .where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.epoch.desc())
    ).all()
    keep = {row.id for row in rows[:policy.keep_last]}
    if policy.keep_best:
        best = next((row for row in rows if row.is_best), None)  # the latest improvement is the best
        if best is not None:
            keep.add(best.id)
    doomed = [row for row in rows if row.id not in keep]
    if doomed:
        session.execute(
            delete(CheckpointRow).where(CheckpointRow.id.in_([row.id for row in doomed]))
            .execution_options(synchronize_session=False)
        )
    return [row.key for row in doomed]
