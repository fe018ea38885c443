"""Store, API side: jobs, listing, history, cancel, checkpoints and models (SQLite and PostgreSQL)."""
from __future__ import annotations

import hashlib
import math

import pytest

from service.specs import EpochMetrics
from service.store import Conflict, InvalidCursor, NotFound
from tests.utils.factories import create_job, epoch_metrics, job_spec, read_object, store_checkpoint, store_model

LEASE = 30.0


def run_epochs(store, job_id: str, worker: str, epochs, *, every: int = 1, best=lambda epoch: True):
    acks = []
    for epoch in epochs:
        checkpoint = store_checkpoint(store, job_id, epoch) if epoch % every == 0 else None
        acks.append(store.record_epoch(job_id, worker, epoch_metrics(epoch), is_best=best(epoch),
                                       checkpoint=checkpoint, lease_seconds=LEASE))
    return acks


def test_create_and_get_job(store):
    job = create_job(store, owner="alice", name="first", tags=["a", "b", "a"], epochs=7)
    assert job.status == "queued"
    assert job.progress.epoch == 0 and job.progress.epochs == 7
    assert job.tags == ["a", "b"]
    assert job.dataset_id == "builtin:xor"
    assert job.attempt == 0 and job.started_at is None and job.finished_at is None
    assert job.created_at.tzinfo is not None

    again = store.get_job(job.id)
    assert again == job
    assert again.spec.loss == "categorical_crossentropy" and again.spec.model.output_activation == "softmax"
    assert store.get_job(job.id, owner="alice") == job
    with pytest.raises(NotFound):
        store.get_job(job.id, owner="bob")
    with pytest.raises(NotFound):
        store.get_job("0" * 32)


def test_create_job_rejects_unknown_dataset_and_unresolved_spec(store):
    spec = job_spec("xor")
    with pytest.raises(NotFound):
        store.create_job(owner=None, spec=spec.model_copy(update={"dataset": spec.dataset.model_copy(
            update={"builtin": None, "id": "f" * 32})}), dataset_id="f" * 32)
    with pytest.raises(ValueError):
        store.create_job(owner=None, spec=spec, dataset_id="builtin:digits")  # not the spec's dataset
    unresolved = spec.model_copy(update={"loss": None})
    with pytest.raises(ValueError):
        store.create_job(owner=None, spec=unresolved, dataset_id="builtin:xor")
    assert store.list_jobs().items == []


def test_list_filters(store):
    a = create_job(store, owner="alice", name="alpha", tags=["x", "y"])
    b = create_job(store, owner="bob", name="beta", tags=["y"], builtin="iris")
    c = create_job(store, owner="alice", name="alpha", tags=[])
    store.request_cancel(c.id)

    def ids(**filters):
        return [job.id for job in store.list_jobs(**filters).items]

    assert ids() == [c.id, b.id, a.id]  # newest first
    assert ids(descending=False) == [a.id, b.id, c.id]
    assert ids(owner="alice") == [c.id, a.id]
    assert ids(tag="y") == [b.id, a.id]
    assert ids(tag="x") == [a.id]
    assert ids(tag="nope") == []
    assert ids(name="alpha") == [c.id, a.id]
    assert ids(dataset="builtin:iris") == [b.id]
    assert ids(status="cancelled") == [c.id]
    assert ids(status="queued", tag="y", owner="alice") == [a.id]


@pytest.mark.parametrize("descending", [True, False])
def test_cursor_pagination_created_at(store, descending):
    jobs = [create_job(store, name=f"job{i}") for i in range(7)]
    expected = [job.id for job in (reversed(jobs) if descending else jobs)]
    seen, cursor = [], None
    while True:
        page = store.list_jobs(limit=3, cursor=cursor, descending=descending)
        seen += [job.id for job in page.items]
        # a job created between pages must not shift or repeat what follows
        create_job(store, name="late")
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # nothing repeated
    if descending:
        assert seen == expected  # newer jobs sort before the cursor: never shown
    else:
        assert seen[:7] == expected  # newer jobs sort after: shown at the end


def test_cursor_pagination_by_best_metric_puts_missing_values_last(store):
    losses = [0.5, None, 0.2, 0.5, None, 0.9]
    jobs = []
    for loss in losses:
        job = create_job(store)
        jobs.append(job)
        if loss is not None:
            store.claim_job(job.id, "w", LEASE)
            store.record_epoch(job.id, "w", epoch_metrics(1, val_loss=loss), is_best=True, lease_seconds=LEASE)

    def walk(order_by, descending):
        seen, cursor = [], None
        while True:
            page = store.list_jobs(order_by=order_by, descending=descending, limit=2, cursor=cursor)
            seen += [job.id for job in page.items]
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    by_loss = walk("best_val_loss", False)
    got = [losses[[job.id for job in jobs].index(job_id)] for job_id in by_loss]
    assert got == [0.2, 0.5, 0.5, 0.9, None, None]
    assert len(set(by_loss)) == len(jobs)
    descending = walk("best_val_loss", True)
    got = [losses[[job.id for job in jobs].index(job_id)] for job_id in descending]
    assert got == [0.9, 0.5, 0.5, 0.2, None, None]
    assert len(walk("best_val_accuracy", True)) == len(jobs)


def test_bad_cursors_and_arguments(store):
    for _ in range(3):
        create_job(store)
    cursor = store.list_jobs(limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        store.list_jobs(limit=1, cursor=cursor, order_by="best_val_loss")
    with pytest.raises(InvalidCursor):
        store.list_jobs(limit=1, cursor=cursor, descending=False)
    with pytest.raises(InvalidCursor):
        store.list_jobs(cursor="not-a-cursor!!")
    with pytest.raises(ValueError):
        store.list_jobs(order_by="name")
    with pytest.raises(ValueError):
        store.list_jobs(limit=0)


def test_cancel_queued_job_never_starts(store):
    job = create_job(store)
    cancelled = store.request_cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.stop_reason == "cancelled"
    assert cancelled.finished_at is not None
    assert store.claim_job(job.id, "w", LEASE) is None
    assert store.get_job(job.id).status == "cancelled"
    with pytest.raises(NotFound):
        store.request_cancel(job.id, owner="someone-else")


def test_cancel_running_job_is_requested_and_acknowledged(store):
    job = create_job(store)
    store.claim_job(job.id, "w", LEASE)
    [ack] = run_epochs(store, job.id, "w", [1])
    assert ack.cancel_requested is False
    assert store.cancel_requested(job.id) is False
    requested = store.request_cancel(job.id)
    assert requested.status == "running" and requested.cancel_requested
    assert store.cancel_requested(job.id) is True
    [ack] = run_epochs(store, job.id, "w", [2])
    assert ack.cancel_requested is True
    store.finish_job(job.id, "w", status="cancelled", stop_reason="cancelled")
    done = store.get_job(job.id)
    assert done.status == "cancelled" and done.progress.epoch == 2
    assert store.request_cancel(job.id) == done  # terminal: unchanged


def test_history_is_ordered_and_stores_non_finite_as_null(store):
    job = create_job(store)
    store.claim_job(job.id, "w", LEASE)
    run_epochs(store, job.id, "w", [1, 2, 3])
    store.record_epoch(job.id, "w", EpochMetrics(epoch=4, train_loss=math.nan, val_loss=math.inf, lr=0.001),
                       is_best=False, lease_seconds=LEASE)
    history = store.history(job.id)
    assert [row.epoch for row in history] == [1, 2, 3, 4]
    assert history[0] == epoch_metrics(1)
    assert history[3].train_loss is None and history[3].val_loss is None and history[3].lr == 0.001
    current = store.get_job(job.id)
    assert current.latest_metrics == history[3]
    assert current.best_epoch == 3 and current.best_metrics == history[2]
    with pytest.raises(NotFound):
        store.history(job.id, owner="nobody")


def test_checkpoints_pruned_to_keep_last_and_best(store):
    job = create_job(store, epochs=8, checkpoint={"every_epochs": 1, "keep_last": 2, "keep_best": True})
    store.claim_job(job.id, "w", LEASE)
    best_epochs = {1, 2, 3}  # no improvement after epoch 3
    acks = run_epochs(store, job.id, "w", range(1, 9), best=lambda epoch: epoch in best_epochs)
    checkpoints = store.list_checkpoints(job.id)
    assert [(c.epoch, c.is_best) for c in checkpoints] == [(3, True), (7, False), (8, False)]
    for checkpoint in checkpoints:
        data = read_object(store, store.checkpoint_key(job.id, checkpoint.epoch))
        assert checkpoint.sha256 == hashlib.sha256(data).hexdigest() and checkpoint.size_bytes == len(data)
    pruned = [key for ack in acks for key in ack.pruned]
    assert sorted(pruned) == [store.checkpoint_key(job.id, e) for e in (1, 2, 4, 5, 6)]
    assert not any(store.artifacts.exists(key) for key in pruned)


def test_checkpoints_without_keep_best(store):
    job = create_job(store, epochs=6, checkpoint={"every_epochs": 2, "keep_last": 1, "keep_best": False})
    store.claim_job(job.id, "w", LEASE)
    run_epochs(store, job.id, "w", range(1, 7), every=2, best=lambda epoch: epoch == 2)
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [6]


def test_model_file_after_success(store):
    job = create_job(store)
    with pytest.raises(Conflict):
        store.model_file(job.id)
    store.claim_job(job.id, "w", LEASE)
    run_epochs(store, job.id, "w", [1, 2, 3], best=lambda epoch: epoch != 3)
    model = store_model(store, job.id, b"weights")
    assert (model.key, model.size_bytes, model.sha256) == (store.model_key(job.id), 7, hashlib.sha256(b"weights").hexdigest())
    store.finish_job(job.id, "w", status="succeeded", stop_reason="early_stopped", best_epoch=2, model=model)
    assert store.model_file(job.id) == model
    assert read_object(store, model.key) == b"weights"
    done = store.get_job(job.id)
    assert (done.status, done.stop_reason, done.best_epoch) == ("succeeded", "early_stopped", 2)
    assert done.best_metrics == epoch_metrics(2) and done.finished_at is not None
    with pytest.raises(NotFound):
        store.model_file(job.id, owner="nobody")
    with pytest.raises(ValueError, match="invalid artifact key"):  # keys never escape the store
        store.artifacts.write("../elsewhere.npz", lambda file: file.write(b"x"))


def test_ping(store):
    store.ping()


def test_history_rows_match_history(store):
    job = create_job(store)
    store.claim_job(job.id, "w", LEASE)
    run_epochs(store, job.id, "w", [1, 2])
    fields, rows = store.history_rows(job.id)
    assert fields[0] == "epoch" and len(rows) == 2
    assert [EpochMetrics(**dict(zip(fields, row))) for row in rows] == store.history(job.id)
    with pytest.raises(NotFound):
        store.history_rows(job.id, owner="nobody")
