"""Store, worker side: claims, leases, resume after a crash, attempts (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from service.store import LeaseLost
from tests.service.store.test_jobs import LEASE, run_epochs
from tests.utils.factories import create_job, epoch_metrics


def test_claim_queued_job(store):
    job = create_job(store)
    claim = store.claim_job(job.id, "w1", LEASE)
    assert claim is not None
    assert (claim.job_id, claim.attempt, claim.resume_epoch, claim.resume_checkpoint) == (job.id, 1, 0, None)
    assert claim.spec == job.spec and claim.dataset_id == "builtin:xor" and claim.dataset_key is None
    running = store.get_job(job.id)
    assert running.status == "running" and running.attempt == 1 and running.started_at is not None


def test_claim_is_lost_while_the_lease_holds(store, clock):
    job = create_job(store)
    assert store.claim_job(job.id, "w1", LEASE) is not None
    assert store.claim_job(job.id, "w2", LEASE) is None
    clock.advance(LEASE - 1)
    assert store.claim_job(job.id, "w2", LEASE) is None
    run_epochs(store, job.id, "w1", [1])  # renews the lease
    clock.advance(LEASE - 1)
    assert store.claim_job(job.id, "w2", LEASE) is None
    assert store.get_job(job.id).attempt == 1


def test_expired_lease_resumes_from_latest_checkpoint(store, clock):
    job = create_job(store, epochs=10, checkpoint={"every_epochs": 2, "keep_last": 2, "keep_best": True})
    store.claim_job(job.id, "w1", LEASE)
    # epoch 5 is the best; the checkpoints are at 2 and 4; the worker dies during epoch 6
    run_epochs(store, job.id, "w1", range(1, 6), every=2, best=lambda epoch: epoch in (1, 3, 5))
    assert store.get_job(job.id).best_epoch == 5
    clock.advance(LEASE + 1)

    claim = store.claim_job(job.id, "w2", LEASE)
    assert claim is not None and claim.attempt == 2
    assert claim.resume_epoch == 4 and claim.resume_checkpoint == store.checkpoint_key(job.id, 4)
    assert [row.epoch for row in store.history(job.id)] == [1, 2, 3, 4]
    resumed = store.get_job(job.id)
    assert resumed.progress.epoch == 4 and resumed.latest_metrics.epoch == 4
    assert resumed.best_epoch == 3 and resumed.best_metrics == epoch_metrics(3)  # 5 was discarded

    # the old worker wakes up: every write it tries is refused
    with pytest.raises(LeaseLost):
        store.record_epoch(job.id, "w1", epoch_metrics(6), is_best=False, lease_seconds=LEASE)
    with pytest.raises(LeaseLost):
        store.finish_job(job.id, "w1", status="succeeded", stop_reason="completed")
    run_epochs(store, job.id, "w2", range(5, 11), every=2)
    store.finish_job(job.id, "w2", status="succeeded", stop_reason="completed")
    assert [row.epoch for row in store.history(job.id)] == list(range(1, 11))
    assert store.get_job(job.id).status == "succeeded"


def test_resume_without_checkpoint_discards_all_history(store, clock):
    job = create_job(store, epochs=10, checkpoint={"every_epochs": 5})
    store.claim_job(job.id, "w1", LEASE)
    run_epochs(store, job.id, "w1", [1, 2, 3], every=5)
    clock.advance(LEASE + 1)
    claim = store.claim_job(job.id, "w2", LEASE)
    assert claim.resume_epoch == 0 and claim.resume_checkpoint is None
    assert store.history(job.id) == []
    job = store.get_job(job.id)
    assert job.progress.epoch == 0 and job.latest_metrics is None and job.best_epoch is None


def test_job_fails_after_max_attempts(make_store, clock):
    store = make_store(max_attempts=2)
    job = create_job(store)
    for attempt, worker in enumerate(["w1", "w2"], start=1):
        claim = store.claim_job(job.id, worker, LEASE)
        assert claim.attempt == attempt
        clock.advance(LEASE + 1)  # the worker dies
    assert store.claim_job(job.id, "w3", LEASE) is None
    failed = store.get_job(job.id)
    assert failed.status == "failed" and failed.stop_reason == "error"
    assert "2 attempts" in failed.error and failed.attempt == 2


def test_cancel_requested_then_worker_died_ends_cancelled(store, clock):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    store.request_cancel(job.id)
    clock.advance(LEASE + 1)
    assert store.claim_job(job.id, "w2", LEASE) is None
    assert store.get_job(job.id).status == "cancelled"


def test_terminal_jobs_are_not_claimed(store):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    store.finish_job(job.id, "w1", status="failed", stop_reason="error", error="boom")
    assert store.claim_job(job.id, "w2", LEASE) is None
    with pytest.raises(LeaseLost):
        store.record_epoch(job.id, "w1", epoch_metrics(1), is_best=True, lease_seconds=LEASE)
    assert store.get_job(job.id).error == "boom"


def test_finish_job_validates_arguments(store):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    with pytest.raises(ValueError):
        store.finish_job(job.id, "w1", status="running", stop_reason="completed")


def test_duplicate_epoch_is_refused_atomically(store):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    run_epochs(store, job.id, "w1", [1, 2])
    with pytest.raises(IntegrityError):
        store.record_epoch(job.id, "w1", epoch_metrics(1, val_loss=0.001), is_best=True, lease_seconds=LEASE)
    job = store.get_job(job.id)
    assert job.progress.epoch == 2 and job.best_epoch == 2  # the failed write changed nothing
    assert len(store.history(job.id)) == 2


def test_concurrent_claims_have_one_winner(make_store):
    """Eight stores (eight engines, like eight worker processes) race for each job."""
    stores = [make_store() for _ in range(8)]
    jobs = [create_job(stores[0]) for _ in range(5)]
    for job in jobs:
        barrier = threading.Barrier(len(stores))
        results: dict[int, object] = {}

        def claim(index: int) -> None:
            barrier.wait()
            results[index] = stores[index].claim_job(job.id, f"w{index}", LEASE)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [i for i, claim in results.items() if claim is not None]
        assert len(results) == len(stores) and len(winners) == 1
        assert stores[0].get_job(job.id).attempt == 1


def test_dispatchable_jobs_are_old_queued_and_expired_running(store, clock):
    old_queued = create_job(store)
    running = create_job(store)
    store.claim_job(running.id, "w1", LEASE)
    done = create_job(store)
    store.claim_job(done.id, "w1", LEASE)
    store.finish_job(done.id, "w1", status="succeeded", stop_reason="completed")
    cutoff = clock.now
    create_job(store)  # too recent to be considered lost
    assert store.dispatchable_jobs(queued_before=cutoff) == [old_queued.id]
    clock.advance(LEASE + 1)
    assert store.dispatchable_jobs(queued_before=cutoff) == [old_queued.id, running.id]
    assert store.dispatchable_jobs(queued_before=cutoff, limit=1) == [old_queued.id]


def test_job_with_an_invalid_stored_spec_fails_at_claim(store):
    from sqlalchemy import update

    from service.store.models import JobRow

    job = create_job(store)
    with store.session_scope(write=True) as session:
        session.execute(update(JobRow).where(JobRow.id == job.id).values(spec={"dataset": {}}))
    assert store.claim_job(job.id, "w1", LEASE) is None
    with store.session_scope() as session:  # JobPublic needs a valid spec: read the row
        row = session.get(JobRow, job.id)
        assert (row.status, row.stop_reason) == ("failed", "error")
        assert row.error.startswith("the stored job spec is no longer valid") and "dataset" in row.error


def test_renew_lease_extends_only_the_holders_lease(store, clock):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    clock.advance(LEASE - 1)
    assert store.renew_lease(job.id, "w1", LEASE) is False  # no cancel requested
    clock.advance(LEASE - 1)
    assert store.claim_job(job.id, "w2", LEASE) is None  # renewed: still held
    with pytest.raises(LeaseLost):
        store.renew_lease(job.id, "w2", LEASE)
    store.request_cancel(job.id)
    assert store.renew_lease(job.id, "w1", LEASE) is True


def test_cancel_requested_checks_the_lease_when_given_a_worker(store, clock):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    assert store.cancel_requested(job.id, "w1") is False
    clock.advance(LEASE + 1)
    store.claim_job(job.id, "w2", LEASE)
    with pytest.raises(LeaseLost):
        store.cancel_requested(job.id, "w1")
    assert store.cancel_requested(job.id) is False  # without a worker: a plain read
    store.finish_job(job.id, "w2", status="succeeded", stop_reason="completed")
    with pytest.raises(LeaseLost):
        store.cancel_requested(job.id, "w2")  # finished: nobody holds it


def test_release_job_queues_it_again_without_counting_the_attempt(store, clock):
    job = create_job(store, epochs=10, checkpoint={"every_epochs": 2})
    store.claim_job(job.id, "w1", LEASE)
    run_epochs(store, job.id, "w1", range(1, 4), every=2)
    with pytest.raises(LeaseLost):
        store.release_job(job.id, "w2")
    assert store.release_job(job.id, "w1") == "queued"
    released = store.get_job(job.id)
    assert (released.status, released.attempt, released.progress.epoch) == ("queued", 0, 3)
    with pytest.raises(LeaseLost):
        store.record_epoch(job.id, "w1", epoch_metrics(4), is_best=False, lease_seconds=LEASE)
    claim = store.claim_job(job.id, "w2", LEASE)  # at once: no lease to wait for
    assert (claim.attempt, claim.resume_epoch) == (1, 2)
    assert [row.epoch for row in store.history(job.id)] == [1, 2]


def test_release_job_with_a_cancel_requested_ends_it_cancelled(store):
    job = create_job(store)
    store.claim_job(job.id, "w1", LEASE)
    store.request_cancel(job.id)
    assert store.release_job(job.id, "w1") == "cancelled"
    done = store.get_job(job.id)
    assert (done.status, done.stop_reason, done.attempt) == ("cancelled", "cancelled", 1)
