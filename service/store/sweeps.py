"""Sweeps: create, read, list, cancel; releasing held trials as jobs; ASHA's rung decisions.

A sweep's trials are drawn at submission and kept on its row; a trial becomes an ordinary job
when it is *released*, in index order, while fewer than the sweep's max_concurrent (and the
owner's max_concurrent_trials_per_owner) trials are queued or running. Releasing happens in the
transaction that creates the sweep, in the one that ends a trial (finish_job), and in the
reconciler's sweep (for every other way a trial ends: a cancel, a lost worker's last attempt);
the job ids come back to the caller, which enqueues them after the commit. A lost enqueue is a
queued job like any other: the reconciler re-sends it. Releases of one owner are serialized (the
write lock on SQLite, an advisory lock per owner and the sweep rows' locks on PostgreSQL), so
a trial is never released twice and the caps hold.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from service.specs import SweepPage, SweepPublic, SweepSpec, TrialPublic
from service.store.base import StoreBase, owned_row
from service.store.cursors import decode_cursor, encode_cursor, rows_after
from service.store.jobs import JobStore
from service.store.models import EpochMetricsRow, JobRow, SweepRow, SweepRungRow
from service.sweeps import Trial, asha_continues, asha_rungs, mode_of, reward

ACTIVE = ("queued", "running")
ALL_OWNERS = object()  # release_held_trials(): every owner's sweeps
MAX_SWEEP_PAGE = 100


class SweepStore(JobStore, StoreBase):
    def create_sweep(self, *, owner: str | None, spec: SweepSpec, dataset_id: str,
                     trials: list[Trial]) -> tuple[SweepPublic, list[str]]:
        """Store the sweep and release its first trials, in one transaction; returns the sweep and
        the released job ids, to enqueue after the commit."""
        sweep_id = self._new_id()
        stored = spec.model_copy(update={"mode": mode_of(spec)})
        with self.session_scope(write=True) as session:
            row = SweepRow(
                id=sweep_id, owner=owner, name=spec.name, spec=stored.model_dump(mode="json"), dataset_id=dataset_id,
                trials=[{"params": trial.params, "spec": trial_named(trial, spec.name, index).model_dump(mode="json")}
                        for index, trial in enumerate(trials)],
                trial_count=len(trials), released=0, max_concurrent=spec.max_concurrent, metric=spec.metric, mode=stored.mode,
                asha_grace_period=spec.asha.grace_period if spec.asha else None,
                asha_reduction_factor=spec.asha.reduction_factor if spec.asha else None,
                created_at=self._now(),
            )
            session.add(row)
            session.flush()
            released = self._release_trials(session, owner)
            return self._sweep_public(session, row), released

    def get_sweep(self, sweep_id: str, owner: str | None = None) -> SweepPublic:
        with self.session_scope() as session:
            return self._sweep_public(session, self._sweep_row(session, sweep_id, owner))

    def list_sweeps(self, owner: str | None = None, limit: int = 20, cursor: str | None = None) -> SweepPage:
        """Newest first; keyset pages over (created_at, id)."""
        if not 1 <= limit <= MAX_SWEEP_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_SWEEP_PAGE}")
        query = select(SweepRow)
        if owner is not None:
            query = query.where(SweepRow.owner == owner)
        if cursor is not None:
            value, last_id = decode_cursor(cursor, "created_at", True)
            query = query.where(rows_after(SweepRow.created_at, value, last_id, True, nullable=False,
                                           id_column=SweepRow.id))
        query = query.order_by(SweepRow.created_at.desc(), SweepRow.id.desc()).limit(limit + 1)
        with self.session_scope() as session:
            rows = list(session.scalars(query))
            items = [self._sweep_public(session, row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = encode_cursor("created_at", True, rows[limit - 1].created_at, rows[limit - 1].id)
        return SweepPage(items=items, next_cursor=next_cursor)

    def cancel_sweep(self, sweep_id: str, owner: str | None = None) -> tuple[SweepPublic, list[str]]:
        """Release no more trials, cancel the queued ones and ask the running ones to stop (they end
        cancelled at their next batch). Returns the sweep and the ids of the trials asked to stop.

        Two transactions, so no lock is ever taken in the opposite order of a finishing trial's
        (job row, then sweep row): the first marks the sweep (waiting for any release in flight),
        the second, which then sees every trial ever released, cancels them."""
        now = self._now()
        with self.session_scope(write=True) as session:
            self._sweep_row(session, sweep_id, owner)
            session.execute(update(SweepRow).where(SweepRow.id == sweep_id, SweepRow.cancelled_at.is_(None))
                            .values(cancelled_at=now).execution_options(synchronize_session=False))
        with self.session_scope(write=True) as session:
            session.execute(
                update(JobRow).where(JobRow.sweep_id == sweep_id, JobRow.status == "queued")
                .values(status="cancelled", stop_reason="cancelled", cancel_requested=True, finished_at=now)
                .execution_options(synchronize_session=False))
            stopping = list(session.scalars(
                update(JobRow).where(JobRow.sweep_id == sweep_id, JobRow.status == "running")
                .values(cancel_requested=True).returning(JobRow.id).execution_options(synchronize_session=False)))
            return self._sweep_public(session, self._sweep_row(session, sweep_id, owner, refresh=True)), stopping

    def release_held_trials(self, owner: Any = ALL_OWNERS) -> list[str]:
        """Release what the caps allow now, for one owner or all (the reconciler); returns job ids."""
        if owner is ALL_OWNERS:
            with self.session_scope() as session:
                owners = list(session.scalars(
                    select(SweepRow.owner).where(SweepRow.cancelled_at.is_(None), SweepRow.released < SweepRow.trial_count)
                    .distinct()))
        else:
            owners = [owner]
        released: list[str] = []
        for each in owners:
            with self.session_scope(write=True) as session:
                released += self._release_trials(session, each)
        return released

    # ---------------------------------------------------------------- inside other transactions

    def _release_trials(self, session: Session, owner: str | None) -> list[str]:
        """Create the jobs of held trials of `owner`'s open sweeps (oldest sweep first) up to the
        caps; returns their ids. Call inside a write transaction."""
        if not self._db.is_sqlite:  # SQLite: the write transaction already holds the database lock
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"sweeps:{owner}"})
        mine = SweepRow.owner.is_(None) if owner is None else SweepRow.owner == owner
        sweeps = list(session.scalars(
            select(SweepRow).where(mine, SweepRow.cancelled_at.is_(None), SweepRow.released < SweepRow.trial_count)
            .order_by(SweepRow.created_at, SweepRow.id).with_for_update()))
        if not sweeps:
            return []
        active = dict(session.execute(
            select(JobRow.sweep_id, func.count()).where(JobRow.sweep_id.in_([sweep.id for sweep in sweeps]),
                                                        JobRow.status.in_(ACTIVE))
            .group_by(JobRow.sweep_id)).all())
        owner_room = self.settings.max_concurrent_trials_per_owner - session.scalar(
            select(func.count()).select_from(JobRow)
            .where(JobRow.owner.is_(None) if owner is None else JobRow.owner == owner,
                   JobRow.sweep_id.is_not(None), JobRow.status.in_(ACTIVE)))
        released = []
        for sweep in sweeps:
            room = min(sweep.max_concurrent - active.get(sweep.id, 0), owner_room, sweep.trial_count - sweep.released)
            for index in range(sweep.released, sweep.released + max(room, 0)):
                trial = sweep.trials[index]
                job_id = self._new_id()
                self._insert_job(session, job_id, sweep.owner, trial["spec"], sweep.dataset_id,
                                 sweep_id=sweep.id, trial_index=index, trial_params=trial["params"])
                released.append(job_id)
            if room > 0:
                sweep.released += room
                owner_room -= room
        return released

    def _asha_stops(self, session: Session, sweep_id: str, job_id: str, epoch: int, epochs: int,
                    values: dict[str, Any]) -> bool:
        """ASHA's decision for a trial's epoch (False when the epoch is no rung), taken once: the
        sweep row is locked while the rung's results are read and this one is inserted, and a
        retried epoch reads its stored decision back."""
        sweep = session.execute(
            select(SweepRow.asha_grace_period, SweepRow.asha_reduction_factor, SweepRow.metric, SweepRow.mode)
            .where(SweepRow.id == sweep_id)).one_or_none()
        if sweep is None or sweep.asha_grace_period is None:
            return False
        if epoch not in asha_rungs(sweep.asha_grace_period, sweep.asha_reduction_factor, epochs):
            return False
        session.execute(select(SweepRow.id).where(SweepRow.id == sweep_id).with_for_update())
        decided = session.scalar(select(SweepRungRow.continued).where(
            SweepRungRow.sweep_id == sweep_id, SweepRungRow.rung == epoch, SweepRungRow.job_id == job_id))
        if decided is not None:
            return not decided
        value = values.get(sweep.metric)
        own = reward(value, sweep.mode) if value is not None else None
        others = [r for r in session.scalars(select(SweepRungRow.reward).where(
            SweepRungRow.sweep_id == sweep_id, SweepRungRow.rung == epoch, SweepRungRow.reward.is_not(None)))]
        # Ray records nothing for a missing metric and lets the trial go on; so do we (the row
        # keeps the decision for a retry)
        continues = own is None or asha_continues(own, others, sweep.asha_reduction_factor)
        session.add(SweepRungRow(sweep_id=sweep_id, rung=epoch, job_id=job_id, reward=own, continued=continues,
                                 created_at=self._now()))
        return not continues

    def _stopped_at_rung(self, session: Session, job_id: str, through_epoch: int) -> bool:
        """Whether ASHA already stopped the job at a rung up to `through_epoch` (a resumed trial)."""
        return session.scalar(select(func.count()).select_from(SweepRungRow).where(
            SweepRungRow.job_id == job_id, SweepRungRow.rung <= through_epoch,
            SweepRungRow.continued.is_(False))) > 0

    def _trial_rungs(self, session: Session, sweep_id: str | None, epochs: int) -> tuple[int, ...]:
        if sweep_id is None:
            return ()
        sweep = session.execute(select(SweepRow.asha_grace_period, SweepRow.asha_reduction_factor)
                                .where(SweepRow.id == sweep_id)).one_or_none()
        if sweep is None or sweep.asha_grace_period is None:
            return ()
        return asha_rungs(sweep.asha_grace_period, sweep.asha_reduction_factor, epochs)

    # ---------------------------------------------------------------- reading

    def _sweep_row(self, session: Session, sweep_id: str, owner: str | None, *, refresh: bool = False) -> SweepRow:
        return owned_row(session, SweepRow, "sweep", sweep_id, owner, refresh=refresh)

    def _sweep_public(self, session: Session, row: SweepRow) -> SweepPublic:
        jobs = {job.trial_index: job for job in session.execute(
            select(JobRow.id, JobRow.trial_index, JobRow.status, JobRow.stop_reason)
            .where(JobRow.sweep_id == row.id)).all()}
        column = getattr(EpochMetricsRow, row.metric)
        best_of = func.max(column) if row.mode == "max" else func.min(column)
        metrics = dict(session.execute(
            select(EpochMetricsRow.job_id, best_of)
            .where(EpochMetricsRow.job_id.in_([job.id for job in jobs.values()])).group_by(EpochMetricsRow.job_id)
        ).all()) if jobs else {}
        trials = []
        for index, trial in enumerate(row.trials):
            job = jobs.get(index)
            trials.append(TrialPublic(
                index=index, params=trial["params"], job_id=job.id if job else None,
                status=job.status if job else ("cancelled" if row.cancelled_at else "held"),
                stop_reason=job.stop_reason if job else None, metric=metrics.get(job.id) if job else None))
        sign = -1.0 if row.mode == "max" else 1.0
        trials.sort(key=lambda t: (t.metric is None, sign * t.metric if t.metric is not None else 0.0, t.index))
        counts = {status: 0 for status in ("held", "queued", "running", "succeeded", "failed", "cancelled")}
        for trial in trials:
            counts[trial.status] += 1
        best = trials[0] if trials and trials[0].metric is not None else None
        return SweepPublic(
            id=row.id, name=row.name, status=sweep_status(row, counts), counts=counts, metric=row.metric,
            mode=row.mode, trials=trials, best=best, created_at=row.created_at, cancelled_at=row.cancelled_at,
            spec=SweepSpec.model_validate(row.spec),
        )


def trial_named(trial: Trial, sweep_name: str, index: int):
    """The trial's spec, named `<sweep name>-<index>` unless the base spec names its jobs."""
    if trial.spec.name:
        return trial.spec
    return trial.spec.model_copy(update={"name": f"{sweep_name or 'sweep'}-{index}"[:200]})


def sweep_status(row: SweepRow, counts: dict[str, int]) -> str:
    """cancelled once asked; queued until a trial starts; running while trials are held, queued or
    running; then succeeded if any trial did, else failed."""
    if row.cancelled_at is not None:
        return "cancelled"
    if counts["held"] or counts["queued"] or counts["running"]:
        started = counts["running"] + counts["succeeded"] + counts["failed"] + counts["cancelled"]
        return "running" if started else "queued"
    return "succeeded" if counts["succeeded"] else "failed"
