"""The epoch bookkeeper: epochs recorded in order on a thread of their own, at most one in
flight, its errors and cancel requests brought back to the training thread."""
from __future__ import annotations

import threading

import pytest

from service.store import CheckpointPolicy, LeaseLost, Store
from tests.utils.db import SequentialIds
from tests.utils.factories import create_job, epoch_metrics
from worker.bookkeeping import EpochBookkeeper

LEASE = 30.0


@pytest.fixture
def store(sqlite_database_url, settings_factory, clock):
    store = Store(settings_factory(database_url=sqlite_database_url), clock=clock, new_id=SequentialIds())
    yield store
    store.dispose()


def bookkeeper(store, job_id, **kwargs) -> EpochBookkeeper:
    return EpochBookkeeper(store, job_id, "w", lease_seconds=LEASE, policy=CheckpointPolicy(keep_last=2), **kwargs)


def test_epochs_are_recorded_in_order_with_their_checkpoints(store):
    job = create_job(store, epochs=6)
    store.claim_job(job.id, "w", LEASE)
    with bookkeeper(store, job.id) as keeper:
        for epoch in range(1, 7):
            assert keeper.submit(epoch_metrics(epoch), is_best=True,
                                 checkpoint=lambda file, e=epoch: file.write(f"state {e}".encode())) is None
        keeper.wait()
    assert [row.epoch for row in store.history(job.id)] == [1, 2, 3, 4, 5, 6]
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [5, 6]  # keep_last=2, pruned in order
    assert len(keeper.recorded_seconds) == 6 and len(keeper.blocked_seconds) == 6


def test_a_hand_over_waits_for_the_epoch_in_flight(store, monkeypatch):
    job = create_job(store, epochs=3)
    store.claim_job(job.id, "w", LEASE)
    record, release, recording = store.record_epoch, threading.Event(), threading.Event()

    def slow_record(*args, **kwargs):
        recording.set()
        assert release.wait(10)
        return record(*args, **kwargs)

    monkeypatch.setattr(store, "record_epoch", slow_record)
    with bookkeeper(store, job.id) as keeper:
        keeper.submit(epoch_metrics(1), is_best=True, checkpoint=None)
        assert recording.wait(10)
        second = threading.Thread(target=keeper.submit, args=(epoch_metrics(2),),
                                  kwargs={"is_best": True, "checkpoint": None})
        second.start()
        second.join(0.3)
        assert second.is_alive()  # blocked: epoch 1 is still in flight
        assert store.history(job.id) == []
        release.set()
        second.join(10)
        keeper.wait()
    assert [row.epoch for row in store.history(job.id)] == [1, 2]


def test_a_lost_lease_is_raised_on_the_training_thread(store, clock):
    job = create_job(store, epochs=5)
    store.claim_job(job.id, "w", LEASE)
    with bookkeeper(store, job.id) as keeper:
        keeper.submit(epoch_metrics(1), is_best=True, checkpoint=None)
        keeper.wait()
        clock.advance(LEASE + 1)
        assert store.claim_job(job.id, "other", LEASE) is not None  # another delivery took the job over
        keeper.submit(epoch_metrics(2), is_best=True, checkpoint=None)
        with pytest.raises(LeaseLost):
            while True:  # between batches: check() re-raises once the transaction failed
                keeper.check()
    assert store.history(job.id) == []  # the new claim discarded epoch 1 (no checkpoint); 2 never landed


def test_after_a_cancel_or_a_shutdown_no_further_epoch_is_recorded(store):
    job = create_job(store, epochs=5)
    store.claim_job(job.id, "w", LEASE)
    with bookkeeper(store, job.id) as keeper:
        keeper.submit(epoch_metrics(1), is_best=True, checkpoint=None)
        keeper.wait()
        store.request_cancel(job.id)
        keeper.submit(epoch_metrics(2), is_best=True, checkpoint=None)  # its transaction sees the request
        assert keeper.submit(epoch_metrics(3), is_best=True, checkpoint=None) == "cancelled"
    assert [row.epoch for row in store.history(job.id)] == [1, 2]

    other = create_job(store, epochs=5)
    store.claim_job(other.id, "w", LEASE)
    stopping = threading.Event()
    with bookkeeper(store, other.id, shutdown=stopping.is_set) as keeper:
        keeper.submit(epoch_metrics(1), is_best=True, checkpoint=None)
        stopping.set()
        assert keeper.submit(epoch_metrics(2), is_best=True, checkpoint=None) == "shutdown"
    assert [row.epoch for row in store.history(other.id)] == [1]
