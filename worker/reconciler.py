"""The reconciler: the database says which jobs should be running; make the broker agree.

Every `reconcile_interval_seconds`, each `backprop worker` (its main process, on a thread) asks
the store for jobs that no broker may hold any more and sends their task again, by name, with
task id = job id:
- running jobs whose lease expired (their worker died: SIGKILL, OOM, power loss), at once;
- queued jobs older than `requeue_after_seconds` (the enqueue after the commit never happened,
  or the broker restarted empty);
- held sweep trials that may start now (a trial ended without finish_job releasing the next:
  cancelled, or failed after its worker was lost), released and sent at once.
Sending twice is harmless: the claim's compare-and-set lets one delivery run the job and the
others return without touching it. To keep the queue from filling with such duplicates while
jobs wait their turn behind busy workers, each job is re-sent with backoff (requeue_after, then
2×, 4×, ... up to 2**MAX_BACKOFF_STEPS ×), remembered in memory only: no schema change, and a
restarted worker simply sends once more.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from service.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_STEPS = 4  # a job still waiting is re-sent at most every 16 × requeue_after
SWEEP_LIMIT = 1000  # jobs considered per sweep (oldest first)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Sent:
    at: float  # monotonic seconds
    times: int


class Reconciler:
    """One sweep at a time; `sweep()` returns the ids it sent."""

    def __init__(self, store: Store, enqueue: Callable[[str], None], *, requeue_after_seconds: float,
                 orphan_sweep_seconds: float = 0.0, orphan_grace_seconds: float = 3600.0,
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic):
        self._store, self._enqueue = store, enqueue
        self._requeue_after = requeue_after_seconds
        self._clock, self._monotonic = clock, monotonic
        self._sent: dict[str, Sent] = {}
        self._orphan_sweep_seconds, self._orphan_grace = orphan_sweep_seconds, orphan_grace_seconds
        self._next_orphan_sweep = monotonic()

    def forget_connections(self) -> None:
        """In a forked child: drop the parent's pooled database connections without closing them."""
        self._store.dispose(close=False)

    def sweep(self) -> list[str]:
        released = self._store.release_held_trials()
        for job_id in released:  # just committed, so sent now; if the send fails, they are queued jobs as any
            try:
                self._enqueue(job_id)
            except Exception as error:  # noqa: BLE001 - broker down: re-sent once requeue_after passes
                log.warning("reconciler: could not send released trial %s (%s)", job_id, error)
        queued_before = self._clock() - timedelta(seconds=self._requeue_after)
        due = self._store.dispatchable_jobs(queued_before=queued_before, limit=SWEEP_LIMIT)
        # forget jobs that were claimed or ended since: if they come back, they are sent at once
        still_due = set(due)
        self._sent = {job_id: sent for job_id, sent in self._sent.items() if job_id in still_due}
        now = self._monotonic()
        sent_now = []
        for job_id in due:
            last = self._sent.get(job_id)
            if last is not None and now < last.at + self._requeue_after * 2 ** min(last.times - 1, MAX_BACKOFF_STEPS):
                continue
            try:
                self._enqueue(job_id)
            except Exception as error:  # noqa: BLE001 - broker down: the next sweep tries again
                log.warning("reconciler: could not send job %s (%s); retrying next sweep", job_id, error)
                break
            self._sent[job_id] = Sent(now, (last.times if last else 0) + 1)
            sent_now.append(job_id)
        if sent_now:
            log.info("reconciler: sent %d job(s) again: %s", len(sent_now), ", ".join(sent_now))
        self.sweep_orphans_if_due()
        return sent_now

    def sweep_orphans_if_due(self) -> list[str]:
        """Every orphan_sweep_seconds (0: never): delete artifacts no row names (service.store.orphans)."""
        now = self._monotonic()
        if self._orphan_sweep_seconds <= 0 or now < self._next_orphan_sweep:
            return []
        self._next_orphan_sweep = now + self._orphan_sweep_seconds
        removed = self._store.sweep_orphans(older_than_seconds=self._orphan_grace)
        if removed:
            log.info("reconciler: removed %d orphaned artifact(s): %s", len(removed), ", ".join(removed[:20]))
        return removed


class ReconcilerThread:
    """Runs `reconciler.sweep()` now and then every `interval` seconds until stopped."""

    def __init__(self, reconciler: Reconciler, interval_seconds: float,
                 on_stop: Callable[[], None] | None = None):
        self.reconciler = reconciler
        self._interval = interval_seconds
        self._on_stop = on_stop
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backprop-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """Stop sweeping; with wait, also join the thread and release its connections (on_stop)."""
        self._stopping.set()
        if not wait:
            return
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._on_stop is not None:
            self._on_stop()
            self._on_stop = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.reconciler.sweep()
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable; keep sweeping
                log.exception("reconciler: sweep failed")
            self._stopping.wait(self._interval)
