"""Store: sweeps and their trials (release under the caps, cancel, reads) and ASHA's decisions in
record_epoch, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from service.store import NotFound
from service.store.models import SweepRungRow
from service.sweeps import asha_continues
from tests.service.store.test_jobs import LEASE
from tests.utils.factories import create_sweep, epoch_metrics, store_checkpoint

ASHA = {"grace_period": 1, "reduction_factor": 2}  # rungs at epochs 1, 2, 4 of 8


def trials_by_status(store, sweep_id: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for trial in store.get_sweep(sweep_id).trials:
        found.setdefault(trial.status, []).append(trial.index)
    return {status: sorted(indexes) for status, indexes in found.items()}


def job_of(store, sweep_id: str, index: int) -> str:
    return next(t.job_id for t in store.get_sweep(sweep_id).trials if t.index == index)


def record(store, job_id: str, worker: str, epoch: int, val_loss: float):
    return store.record_epoch(job_id, worker, epoch_metrics(epoch, val_loss=val_loss), is_best=True, lease_seconds=LEASE)


def start(store, sweep_id: str, index: int, worker: str | None = None) -> str:
    job_id = job_of(store, sweep_id, index)
    assert store.claim_job(job_id, worker or f"w{index}", LEASE) is not None
    return job_id


# ---------------------------------------------------------------- release


def test_a_sweep_releases_max_concurrent_trials_and_holds_the_rest(store):
    sweep, released = create_sweep(store, max_trials=5, max_concurrent=2)
    assert len(released) == 2
    assert sweep.status == "queued"
    assert sweep.counts == {"held": 3, "queued": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    jobs = store.list_jobs(sweep_id=sweep.id).items
    assert sorted(job.id for job in jobs) == sorted(released)
    for job in jobs:  # ordinary jobs carrying their sweep and parameters
        trial = next(t for t in sweep.trials if t.job_id == job.id)
        assert job.sweep_id == sweep.id and job.trial_params == trial.params
        assert job.spec.optimizer.learning_rate == trial.params["optimizer.learning_rate"]
        assert job.name == f"sweep-{trial.index}"  # the base names no job; the sweep has no name either
    assert store.release_held_trials() == []  # full: nothing more until a trial ends


def test_finishing_a_trial_releases_the_next_in_the_same_transaction(store):
    sweep, _ = create_sweep(store, max_trials=3, max_concurrent=2)
    first = start(store, sweep.id, 0)
    assert store.get_sweep(sweep.id).status == "running"
    released = store.finish_job(first, "w0", status="succeeded", stop_reason="completed")
    assert released == [job_of(store, sweep.id, 2)]
    assert trials_by_status(store, sweep.id) == {"succeeded": [0], "queued": [1, 2]}
    # releasing is idempotent: the next release finds no room and no trial left
    assert store.release_held_trials() == []
    for index in (1, 2):
        job_id = start(store, sweep.id, index)
        assert store.finish_job(job_id, f"w{index}", status="failed", stop_reason="error", error="x") == []
    final = store.get_sweep(sweep.id)
    assert final.status == "succeeded" and final.counts["succeeded"] == 1 and final.counts["failed"] == 2


def test_a_sweep_whose_trials_all_failed_is_failed(store):
    sweep, released = create_sweep(store, max_trials=1, max_concurrent=1)
    store.claim_job(released[0], "w", LEASE)
    store.finish_job(released[0], "w", status="failed", stop_reason="error", error="boom")
    assert store.get_sweep(sweep.id).status == "failed"


def test_the_owners_concurrent_trials_are_capped_across_sweeps(make_store):
    store = make_store(max_concurrent_trials_per_owner=3)
    first, released_first = create_sweep(store, owner="alice", max_trials=4, max_concurrent=2)
    second, released_second = create_sweep(store, owner="alice", max_trials=4, max_concurrent=2)
    other, released_other = create_sweep(store, owner="bob", max_trials=4, max_concurrent=2)
    assert (len(released_first), len(released_second), len(released_other)) == (2, 1, 2)
    job_id = start(store, first.id, 0)
    # the freed place goes to the oldest sweep with room
    released = store.finish_job(job_id, "w0", status="succeeded", stop_reason="completed")
    assert released == [job_of(store, first.id, 2)]
    assert store.get_sweep(second.id).counts["queued"] == 1


def test_a_trial_cancelled_while_queued_frees_its_place_through_release_held_trials(store):
    sweep, released = create_sweep(store, max_trials=3, max_concurrent=1)
    store.request_cancel(released[0])
    [next_trial] = store.release_held_trials()  # the API's cancel (and the reconciler) call this
    assert next_trial == job_of(store, sweep.id, 1)


def test_trials_lost_to_max_attempts_free_their_place_through_the_reconcilers_release(make_store, clock):
    store = make_store(max_attempts=1)
    sweep, released = create_sweep(store, max_trials=2, max_concurrent=1)
    store.claim_job(released[0], "w", LEASE)
    clock.advance(LEASE + 1)
    assert store.claim_job(released[0], "w2", LEASE) is None  # ends failed: no attempt left
    assert store.release_held_trials() == [job_of(store, sweep.id, 1)]


# ---------------------------------------------------------------- cancel


def test_cancel_stops_queued_running_and_held_trials(store):
    sweep, released = create_sweep(store, max_trials=5, max_concurrent=2)
    running = start(store, sweep.id, 0)
    cancelled, stopping = store.cancel_sweep(sweep.id)
    assert stopping == [running]
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert trials_by_status(store, sweep.id) == {"running": [0], "cancelled": [1, 2, 3, 4]}
    assert store.get_job(running).cancel_requested
    # the running trial ends cancelled; nothing more is released, now or by the reconciler
    assert store.finish_job(running, "w0", status="cancelled", stop_reason="cancelled") == []
    assert store.release_held_trials() == []
    assert store.get_sweep(sweep.id).counts == {"held": 0, "queued": 0, "running": 0, "succeeded": 0,
                                                "failed": 0, "cancelled": 5}
    assert store.cancel_sweep(sweep.id)[0].status == "cancelled"  # again: unchanged


# ---------------------------------------------------------------- reads


def test_trials_are_ordered_by_the_metric_and_the_best_is_first(store):
    sweep, _ = create_sweep(store, max_trials=3, max_concurrent=3, base={"dataset": {"builtin": "xor"}, "epochs": 3})
    losses = {0: [0.9, 0.5], 1: [0.4, 0.6], 2: [0.7]}
    for index, values in losses.items():
        job_id = start(store, sweep.id, index)
        for epoch, value in enumerate(values, start=1):
            record(store, job_id, f"w{index}", epoch, value)
    read = store.get_sweep(sweep.id)
    assert [(t.index, t.metric) for t in read.trials] == [(1, 0.4), (0, 0.5), (2, 0.7)]  # best of each, min
    assert read.best == read.trials[0]
    maxed, _ = create_sweep(store, max_trials=2, max_concurrent=2, metric="val_accuracy")
    job_id = start(store, maxed.id, 1)
    store.record_epoch(job_id, "w1", epoch_metrics(1, val_accuracy=0.75), is_best=True, lease_seconds=LEASE)
    read = store.get_sweep(maxed.id)
    assert read.mode == "max" and read.best.index == 1 and read.trials[1].metric is None


def test_another_owners_sweep_is_not_found(store):
    sweep, _ = create_sweep(store, owner="alice")
    assert store.get_sweep(sweep.id, owner="alice").id == sweep.id
    with pytest.raises(NotFound):
        store.get_sweep(sweep.id, owner="bob")
    with pytest.raises(NotFound):
        store.cancel_sweep(sweep.id, owner="bob")
    assert store.list_sweeps(owner="bob").items == []


def test_list_sweeps_pages_newest_first(store, clock):
    ids = []
    for _ in range(5):
        ids.append(create_sweep(store, max_trials=1, max_concurrent=1)[0].id)
        clock.advance(1)
    first = store.list_sweeps(limit=2)
    second = store.list_sweeps(limit=2, cursor=first.next_cursor)
    third = store.list_sweeps(limit=2, cursor=second.next_cursor)
    assert [s.id for s in first.items + second.items + third.items] == ids[::-1]
    assert third.next_cursor is None


# ---------------------------------------------------------------- ASHA


def asha_sweep(store, trials: int = 4, **fields):
    sweep, _ = create_sweep(store, max_trials=trials, max_concurrent=trials, asha=ASHA,
                            base={"dataset": {"builtin": "xor"}, "epochs": 8}, **fields)
    return sweep, [start(store, sweep.id, index) for index in range(trials)]


def test_claims_of_asha_trials_carry_their_rungs(store):
    sweep, _ = create_sweep(store, max_trials=1, max_concurrent=1, asha=ASHA,
                            base={"dataset": {"builtin": "xor"}, "epochs": 8})
    claim = store.claim_job(job_of(store, sweep.id, 0), "w", LEASE)
    assert claim.rungs == (1, 2, 4) and not claim.asha_stopped
    plain, released = create_sweep(store, max_trials=1, max_concurrent=1)
    assert store.claim_job(released[0], "w", LEASE).rungs == ()


def test_a_rung_keeps_the_top_of_the_results_recorded_before(store):
    sweep, jobs = asha_sweep(store, trials=4)
    # η = 2, mode min: reward -val_loss; the cutoff is the median of the others' rewards at the rung
    assert not record(store, jobs[0], "w0", 1, 0.5).asha_stopped  # nothing recorded yet
    assert not record(store, jobs[1], "w1", 1, 0.4).asha_stopped  # -0.4 ≥ -0.5
    assert record(store, jobs[2], "w2", 1, 0.6).asha_stopped  # -0.6 < median(-0.5, -0.4)
    assert not record(store, jobs[3], "w3", 1, 0.45).asha_stopped  # -0.45 ≥ median(-0.5, -0.4, -0.6) = -0.5
    # epoch 3 is no rung: nobody is stopped there, however bad
    assert not record(store, jobs[0], "w0", 2, 0.5).asha_stopped  # alone at rung 2
    assert not record(store, jobs[0], "w0", 3, 9.0).asha_stopped
    assert record(store, jobs[1], "w1", 2, 0.7).asha_stopped  # -0.7 < -0.5


def test_mode_max_ranks_higher_values_first(store):
    sweep, jobs = asha_sweep(store, trials=2, metric="val_accuracy")
    def accuracy(job_id, worker, value):
        return store.record_epoch(job_id, worker, epoch_metrics(1, val_accuracy=value), is_best=True,
                                  lease_seconds=LEASE)
    assert not accuracy(jobs[0], "w0", 0.8).asha_stopped
    assert accuracy(jobs[1], "w1", 0.7).asha_stopped


def test_a_retried_epoch_gets_the_same_decision(store, clock):
    sweep, jobs = asha_sweep(store, trials=2)
    record(store, jobs[0], "w0", 1, 0.3)
    assert record(store, jobs[1], "w1", 1, 0.9).asha_stopped
    # the worker dies before finishing; the next delivery trains epoch 1 again, with another value
    clock.advance(LEASE + 1)
    claim = store.claim_job(jobs[1], "w1-again", LEASE)
    assert claim.resume_epoch == 0 and not claim.asha_stopped
    assert record(store, jobs[1], "w1-again", 1, 0.1).asha_stopped  # the stored decision, not a new one
    # and a trial that passed keeps passing on retry
    clock.advance(LEASE + 1)
    store.claim_job(jobs[0], "w0-again", LEASE)
    assert not record(store, jobs[0], "w0-again", 1, 5.0).asha_stopped


def test_a_trial_stopped_at_a_checkpointed_rung_is_claimed_as_stopped(store, clock):
    sweep, jobs = asha_sweep(store, trials=2)
    record(store, jobs[0], "w0", 1, 0.3)
    store.record_epoch(jobs[1], "w1", epoch_metrics(1, val_loss=0.9), is_best=True, lease_seconds=LEASE,
                       checkpoint=store_checkpoint(store, jobs[1], 1))
    clock.advance(LEASE + 1)
    claim = store.claim_job(jobs[1], "w1-again", LEASE)
    assert claim.resume_epoch == 1 and claim.asha_stopped


def test_a_missing_metric_lets_the_trial_go_on_unrecorded(store):
    sweep, jobs = asha_sweep(store, trials=2)
    record(store, jobs[0], "w0", 1, 0.3)
    ack = store.record_epoch(jobs[1], "w1", epoch_metrics(1, val_loss=float("nan")), is_best=True, lease_seconds=LEASE)
    assert not ack.asha_stopped


def test_concurrent_rung_results_are_decided_one_at_a_time(make_store):
    stores = [make_store() for _ in range(4)]  # one per "worker", each with its own connections
    sweep, jobs = asha_sweep(stores[0], trials=8)
    losses = [0.8, 0.3, 0.5, 0.9, 0.1, 0.7, 0.4, 0.6]
    decisions: dict[int, bool] = {}
    errors = []
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        try:
            barrier.wait()
            ack = record(stores[index % len(stores)], jobs[index], f"w{index}", 1, losses[index])
            decisions[index] = ack.asha_stopped
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(decisions) == len(jobs)
    with stores[0].session_scope() as session:
        stored = {row.job_id: row.continued for row in session.scalars(select(SweepRungRow))}
    assert stored == {jobs[index]: not stopped for index, stopped in decisions.items()}
    # the decisions are those of some serial order of the same results (one transaction at a time)
    assert serial_order_exists([-loss for loss in losses], [not decisions[i] for i in range(len(jobs))], 2)
    assert not decisions[losses.index(min(losses))]  # the best result goes on, whatever the order


def serial_order_exists(rewards: list[float], continued: list[bool], eta: int) -> bool:
    """Whether recording the results one by one in some order gives exactly these decisions."""
    def extend(done: list[int]) -> bool:
        if len(done) == len(rewards):
            return True
        others = [rewards[i] for i in done]
        return any(asha_continues(rewards[i], others, eta) == continued[i] and extend(done + [i])
                   for i in range(len(rewards)) if i not in done)
    return extend([])


def test_concurrent_trial_ends_release_each_held_trial_once_within_the_cap(make_store):
    stores = [make_store() for _ in range(3)]
    sweep, running = create_sweep(stores[0], max_trials=9, max_concurrent=3)
    for index, job_id in enumerate(running):
        assert stores[0].claim_job(job_id, f"w{index}", LEASE) is not None
    released: list[str] = []
    errors = []
    barrier = threading.Barrier(len(running))

    def finish(index: int) -> None:
        try:
            barrier.wait()
            released.extend(stores[index].finish_job(running[index], f"w{index}", status="succeeded",
                                                     stop_reason="completed"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(index,)) for index in range(len(running))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(released) == len(set(released)) == 3  # each freed place filled once
    read = stores[0].get_sweep(sweep.id)
    assert (read.counts["queued"], read.counts["held"], read.counts["succeeded"]) == (3, 3, 3)
    assert sorted(t.index for t in read.trials if t.status == "queued") == [3, 4, 5]
