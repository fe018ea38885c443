"""Sweep trials run in-process by the training task: ASHA stops a poor trial at its rung (succeeded,
pruned, model kept as of the rung), a finished trial's successor is released and enqueued, and a
trial stopped before its worker was lost ends pruned without training on."""
from __future__ import annotations

import pytest

from service.store import Store
from tests.utils.db import SequentialIds
from tests.utils.factories import create_sweep, epoch_metrics
from worker.training import run_job

LEASE = 30.0
GOOD, POOR = 0.05, 1e-5  # learning rates: adam on iris learns plenty in an epoch at the first, nothing at the second


@pytest.fixture
def store(sqlite_database_url, settings_factory, clock):
    store = Store(settings_factory(database_url=sqlite_database_url), clock=clock, new_id=SequentialIds())
    yield store
    store.dispose()


def iris_sweep(store, **fields):
    values = dict(builtin="iris", method="grid", space={"optimizer.learning_rate": {"choice": [GOOD, POOR]}},
                  base={"dataset": {"builtin": "iris"}, "epochs": 6, "batch_size": 16},
                  asha={"grace_period": 1, "reduction_factor": 2}, max_trials=2, max_concurrent=2)
    values.update(fields)
    return create_sweep(store, **values)


def trial_job(store, sweep_id: str, index: int) -> str:
    return next(t.job_id for t in store.get_sweep(sweep_id).trials if t.index == index)


def test_asha_prunes_the_poor_trial_at_its_first_rung_keeping_its_model(store):
    sweep, _ = iris_sweep(store)
    good, poor = trial_job(store, sweep.id, 0), trial_job(store, sweep.id, 1)
    assert run_job(store, good, worker_id="w1", lease_seconds=LEASE) == "succeeded"
    assert run_job(store, poor, worker_id="w2", lease_seconds=LEASE) == "succeeded"
    good_job, poor_job = store.get_job(good), store.get_job(poor)
    assert (good_job.stop_reason, good_job.progress.epoch) == ("completed", 6)
    assert (poor_job.stop_reason, poor_job.progress.epoch) == ("pruned", 1)
    assert [row.epoch for row in store.history(poor)] == [1]
    assert store.model_file(poor).size_bytes > 0  # the model is kept
    read = store.get_sweep(sweep.id)
    assert read.status == "succeeded" and read.best.job_id == good
    assert [(t.job_id, t.stop_reason) for t in read.trials] == [(good, "completed"), (poor, "pruned")]


def test_a_finished_trial_releases_and_enqueues_the_next(store):
    sweep, released = iris_sweep(store, max_concurrent=1, asha=None,
                                 base={"dataset": {"builtin": "iris"}, "epochs": 2})
    sent: list[str] = []
    assert run_job(store, released[0], worker_id="w1", lease_seconds=LEASE, enqueue=sent.append) == "succeeded"
    assert sent == [trial_job(store, sweep.id, 1)]
    assert store.get_job(sent[0]).status == "queued"


def test_a_failed_enqueue_leaves_the_released_trial_queued(store):
    sweep, released = iris_sweep(store, max_concurrent=1, asha=None,
                                 base={"dataset": {"builtin": "iris"}, "epochs": 1})

    def broker_down(job_id: str) -> None:
        raise ConnectionError("broker down")

    assert run_job(store, released[0], worker_id="w1", lease_seconds=LEASE, enqueue=broker_down) == "succeeded"
    assert store.get_job(trial_job(store, sweep.id, 1)).status == "queued"  # for the reconciler to re-send


def test_a_trial_stopped_at_a_rung_before_its_worker_was_lost_ends_pruned_on_resume(store, clock):
    sweep, _ = iris_sweep(store)
    good, poor = trial_job(store, sweep.id, 0), trial_job(store, sweep.id, 1)
    assert run_job(store, good, worker_id="w1", lease_seconds=LEASE) == "succeeded"
    # the poor trial's epoch 1 was recorded, with its checkpoint, by a worker that then died
    store.claim_job(poor, "lost", LEASE)
    history = store.history(good)
    worse = epoch_metrics(1, val_loss=history[0].val_loss * 10)
    assert store.record_epoch(poor, "lost", worse, is_best=True, lease_seconds=LEASE,
                              checkpoint=_real_checkpoint(store, poor)).asha_stopped
    clock.advance(LEASE + 1)
    assert run_job(store, poor, worker_id="w2", lease_seconds=LEASE) == "succeeded"
    job = store.get_job(poor)
    assert (job.stop_reason, job.progress.epoch, job.attempt) == ("pruned", 1, 2)
    assert [row.epoch for row in store.history(poor)] == [1]  # no epoch trained past the rung


def _real_checkpoint(store, job_id: str):
    """Epoch 1's checkpoint as the worker writes it: one epoch of the trial's own training."""
    from worker.datasets import load_dataset
    from worker.nn import Trainer
    from worker.training import train_config

    spec = store.get_job(job_id).spec
    data = load_dataset("builtin:iris", None, spec.seed, store.artifacts)
    trainer = Trainer(train_config(spec), data.X, data.y, X_val=data.X_val, y_val=data.y_val)
    trainer.fit(on_epoch_end=lambda end: "stop here")  # after epoch 1
    return store.artifacts.write(store.checkpoint_key(job_id, 1), trainer.checkpoint_snapshot())
