"""The reconciler's sweep against a real SQLite store; what it sends is recorded, not published
(tests/integration/test_reliability.py runs it inside real workers against real brokers)."""
from __future__ import annotations

import os
import time

import pytest

from service.store import Store
from tests.utils.db import SequentialIds
from tests.utils.factories import create_job, epoch_metrics, store_checkpoint
from worker.reconciler import MAX_BACKOFF_STEPS, Reconciler, ReconcilerThread

REQUEUE_AFTER = 60.0
LEASE = 30.0


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(sqlite_database_url, settings_factory, clock):
    store = Store(settings_factory(database_url=sqlite_database_url), clock=clock, new_id=SequentialIds())
    yield store
    store.dispose()


@pytest.fixture
def sent():
    return []


@pytest.fixture
def monotonic():
    return Monotonic()


@pytest.fixture
def reconciler(store, clock, sent, monotonic):
    return Reconciler(store, sent.append, requeue_after_seconds=REQUEUE_AFTER, clock=clock, monotonic=monotonic)


def advance(clock, monotonic, seconds: float) -> None:
    clock.advance(seconds)
    monotonic.now += seconds


def test_a_queued_job_is_sent_once_it_waited_requeue_after(store, reconciler, clock, monotonic, sent):
    job = create_job(store)
    assert reconciler.sweep() == []  # the API's own message is presumably on its way
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    assert reconciler.sweep() == [job.id]
    assert sent == [job.id]


def test_a_job_still_waiting_is_resent_with_backoff(store, reconciler, clock, monotonic, sent):
    job = create_job(store)
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    times = []
    for second in range(int(REQUEUE_AFTER * 40)):
        if reconciler.sweep():
            times.append(second)
        advance(clock, monotonic, 1)
    gaps = [b - a for a, b in zip(times, times[1:])]
    steps = [REQUEUE_AFTER * 2 ** min(i, MAX_BACKOFF_STEPS) for i in range(len(gaps))]
    assert gaps == steps  # 60, 120, 240, 480, 960, 960 ...
    assert set(sent) == {job.id}


def test_running_jobs_are_sent_only_when_their_lease_expired(store, reconciler, clock, monotonic, sent):
    job = create_job(store)
    assert store.claim_job(job.id, "w1", LEASE) is not None
    advance(clock, monotonic, LEASE - 1)
    assert reconciler.sweep() == []
    advance(clock, monotonic, 2)  # the worker died: no renewal
    assert reconciler.sweep() == [job.id]


def test_claimed_and_finished_jobs_are_forgotten_and_never_sent(store, reconciler, clock, monotonic, sent):
    finished, cancelled, resent = create_job(store), create_job(store), create_job(store)
    store.claim_job(finished.id, "w1", LEASE)
    store.finish_job(finished.id, "w1", status="succeeded", stop_reason="completed")
    store.request_cancel(cancelled.id)
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    assert reconciler.sweep() == [resent.id]
    store.claim_job(resent.id, "w2", LEASE)  # the re-sent message arrived
    assert reconciler.sweep() == []
    advance(clock, monotonic, LEASE + 1)  # ... and that worker died: sent at once, no backoff left over
    assert reconciler.sweep() == [resent.id]
    assert sent == [resent.id, resent.id]


class FlakyBroker:
    def __init__(self) -> None:
        self.up, self.sent = False, []

    def enqueue(self, job_id: str) -> None:
        if not self.up:
            raise ConnectionError("broker unreachable")
        self.sent.append(job_id)


def test_a_broker_error_leaves_the_job_for_the_next_sweep(store, clock, monotonic):
    job = create_job(store)
    broker = FlakyBroker()
    reconciler = Reconciler(store, broker.enqueue, requeue_after_seconds=REQUEUE_AFTER, clock=clock, monotonic=monotonic)
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    assert reconciler.sweep() == []
    broker.up = True
    assert reconciler.sweep() == [job.id] and broker.sent == [job.id]  # no backoff for a send that failed


def test_the_thread_sweeps_until_stopped_and_releases_its_connections_once(store, clock, monotonic, sent):
    job = create_job(store)
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    closed = []
    thread = ReconcilerThread(
        Reconciler(store, sent.append, requeue_after_seconds=REQUEUE_AFTER, clock=clock, monotonic=monotonic),
        0.01, on_stop=lambda: closed.append(True))
    thread.start()
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [job.id]
    thread.stop(wait=False)  # what worker_shutting_down does: no further sweeps
    advance(clock, monotonic, REQUEUE_AFTER * 100)  # the job would be due again
    time.sleep(0.1)
    assert sent == [job.id] and closed == []
    thread.stop()
    thread.stop()
    assert closed == [True]


def test_orphaned_artifacts_are_swept_every_interval(store, clock, monotonic, sent):
    reconciler = Reconciler(store, sent.append, requeue_after_seconds=REQUEUE_AFTER, orphan_sweep_seconds=900,
                            orphan_grace_seconds=3600, clock=clock, monotonic=monotonic)
    job = create_job(store, epochs=3)
    store.claim_job(job.id, "w", LEASE)
    named = store_checkpoint(store, job.id, 1)
    store.record_epoch(job.id, "w", epoch_metrics(1), is_best=True, checkpoint=named, lease_seconds=LEASE)
    orphan = store_checkpoint(store, job.id, 2)  # the worker died before epoch 2's transaction
    for key in (named.key, orphan.key):  # written two hours ago, by the store's clock
        stamp = (clock.now.timestamp() - 7200,) * 2
        os.utime(store.artifacts.local_path(key), stamp)

    assert reconciler.sweep_orphans_if_due() == [orphan.key]
    assert store.artifacts.exists(named.key) and not store.artifacts.exists(orphan.key)
    again = store_checkpoint(store, job.id, 2)
    os.utime(store.artifacts.local_path(again.key), (clock.now.timestamp() - 7200,) * 2)
    reconciler.sweep()
    assert store.artifacts.exists(again.key)  # not due yet: 900 s between sweeps
    monotonic.now += 901
    reconciler.sweep()
    assert not store.artifacts.exists(again.key)


def test_the_orphan_sweep_is_off_by_default(store, reconciler):
    orphan = store_checkpoint(store, create_job(store).id, 1)
    os.utime(store.artifacts.local_path(orphan.key), (0, 0))
    reconciler.sweep()
    assert store.artifacts.exists(orphan.key)


def test_sweep_releases_held_trials_a_cancel_freed_and_sends_them_at_once(store, reconciler, sent):
    from tests.utils.factories import create_sweep

    sweep, [first] = create_sweep(store, max_trials=3, max_concurrent=1)
    assert reconciler.sweep() == [] and sent == []  # the released trial is young; nothing held may start
    store.request_cancel(first)  # ends the trial without finish_job releasing the next
    reconciler.sweep()
    [released] = sent
    trial = next(t for t in store.get_sweep(sweep.id).trials if t.job_id == released)
    assert (trial.index, trial.status) == (1, "queued")
    reconciler.sweep()
    assert sent == [released]  # released once


def test_a_released_trial_whose_publish_was_lost_is_sent_by_the_reconciler(store, reconciler, sent, clock, monotonic):
    from tests.utils.factories import create_sweep

    sweep, [first] = create_sweep(store, max_trials=2, max_concurrent=1)
    store.claim_job(first, "w", LEASE)
    [released] = store.finish_job(first, "w", status="succeeded", stop_reason="completed")
    # the worker died between the commit and the publish: the trial is an ordinary queued job
    reconciler.sweep()
    assert sent == []  # young: its publish may still be under way
    advance(clock, monotonic, REQUEUE_AFTER + 1)
    reconciler.sweep()
    assert sent == [released]
