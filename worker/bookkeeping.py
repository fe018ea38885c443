"""An epoch's bookkeeping off the training thread.

After each epoch the trainer hands over a frozen snapshot of its state and the epoch's metrics;
one bookkeeping thread writes the checkpoint to the artifact store and commits the epoch's
transaction (Store.record_epoch) while the next epoch trains. Epochs are recorded in order, one
at a time: a second hand-over waits for the first (so at most one epoch is in flight and memory
stays one snapshot). What the transaction learns comes back to the training thread: a cancel
request as a flag; LeaseLost, a database error or anything else re-raised at the next hand-over
or `check()`, so the run stops as if the training thread had met it. A crash loses at most the
epoch in flight, which resume recomputes, exactly as a crash during that epoch would.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from service.events import job_events
from service.specs import CrossValidationSummary, EpochMetrics
from service.store import CheckpointPolicy, Store


class EpochBookkeeper:
    def __init__(self, store: Store, job_id: str, worker_id: str, *, lease_seconds: float,
                 policy: CheckpointPolicy, shutdown: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.perf_counter):
        self._store, self._job_id, self._worker_id, self._shutdown = store, job_id, worker_id, shutdown
        self._lease_seconds, self._policy, self._clock = lease_seconds, policy, clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bookkeeping-{job_id[:8]}")
        self._pending: Future | None = None
        self.cancel_requested = False
        self.asha_stopped = False  # an epoch's transaction found the trial below its rung's cutoff
        self.blocked_seconds: list[float] = []  # training-thread time per hand-over (snapshot excluded)
        self.recorded_seconds: list[float] = []  # bookkeeping-thread time per epoch

    def __enter__(self) -> "EpochBookkeeper":
        return self

    def __exit__(self, *_exc) -> None:
        self._executor.shutdown(wait=True)  # an epoch in flight is finished (or fails) before the run ends

    def submit(self, metrics: EpochMetrics, *, is_best: bool, checkpoint: Callable[[BinaryIO], object] | None,
               cross_validation: CrossValidationSummary | None = None) -> str | None:
        """Hand over one finished epoch; waits for the previous one and re-raises its error.

        Once the previous epoch's transaction acknowledged a cancel request or stopped the trial
        at an ASHA rung, or a shutdown was asked meanwhile, this epoch is not recorded and the
        reason ("cancelled", "pruned", "shutdown") is returned for the trainer to stop with, as if it had been asked before the epoch ended.
        """
        started = self._clock()
        self.wait()
        reason = ("cancelled" if self.cancel_requested else "pruned" if self.asha_stopped
                  else "shutdown" if self._shutdown() else None)
        if reason is None:
            self._pending = self._executor.submit(self._record, metrics, is_best, checkpoint, cross_validation)
        self.blocked_seconds.append(self._clock() - started)
        return reason

    def wait(self) -> None:
        """Until the epoch in flight is recorded; re-raises what recording it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def check(self) -> None:
        """Re-raise a finished epoch's error now, without waiting (called between batches)."""
        if self._pending is not None and self._pending.done():
            self.wait()

    def _record(self, metrics: EpochMetrics, is_best: bool, checkpoint, cross_validation) -> None:
        started = self._clock()
        stored = None
        if checkpoint is not None:
            # complete in the artifact store before the epoch's transaction names it
            stored = self._store.artifacts.write(self._store.checkpoint_key(self._job_id, metrics.epoch), checkpoint)
        ack = self._store.record_epoch(self._job_id, self._worker_id, metrics, is_best=is_best, checkpoint=stored,
                                       lease_seconds=self._lease_seconds, checkpoint_policy=self._policy,
                                       cross_validation=cross_validation)
        if ack.cancel_requested:
            self.cancel_requested = True
        if ack.asha_stopped:
            self.asha_stopped = True
        job_events(self._store.settings.broker_url).changed(self._job_id, f"epoch {metrics.epoch}")  # live streams
        self.recorded_seconds.append(self._clock() - started)
