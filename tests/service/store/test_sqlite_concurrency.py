"""SQLite with an API process and worker processes writing together: no "database is locked"."""
from __future__ import annotations

import multiprocessing
import traceback

from service.store import Store
from tests.utils.db import FakeClock, SequentialIds
from tests.utils.factories import create_job, epoch_metrics

WORKERS = 4
EPOCHS = 60
LEASE = 3600.0


def _worker(settings, job_id: str, errors) -> None:
    store = Store(settings)  # its own engine, as in a forked Celery child
    try:
        worker_id = f"worker-{job_id}"
        assert store.claim_job(job_id, worker_id, LEASE) is not None
        for epoch in range(1, EPOCHS + 1):
            checkpoint = None
            if epoch % 5 == 0:
                checkpoint = store.checkpoint_path(job_id, epoch)
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.write_bytes(b"x" * 1000)
            store.record_epoch(job_id, worker_id, epoch_metrics(epoch), is_best=epoch % 3 == 0,
                               checkpoint_path=checkpoint, lease_seconds=LEASE)
            store.cancel_requested(job_id)
        store.finish_job(job_id, worker_id, status="succeeded", stop_reason="completed")
    except BaseException:  # noqa: BLE001 - reported to the parent
        errors.put(traceback.format_exc())
    finally:
        store.dispose()


def _api(settings, errors, rounds: int) -> None:
    store = Store(settings, new_id=lambda: __import__("uuid").uuid4().hex)
    try:
        for _ in range(rounds):
            job = create_job(store, tags=["load"])
            store.request_cancel(job.id)
            store.list_jobs(tag="load", limit=20)
            store.get_job(job.id)
    except BaseException:  # noqa: BLE001
        errors.put(traceback.format_exc())
    finally:
        store.dispose()


def test_api_and_workers_write_together(sqlite_database_url, settings_factory):
    settings = settings_factory(database_url=sqlite_database_url)
    store = Store(settings, clock=FakeClock(), new_id=SequentialIds())
    jobs = [create_job(store, epochs=EPOCHS) for _ in range(WORKERS)]
    store.dispose()  # nothing open across the fork

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    processes = [context.Process(target=_worker, args=(settings, job.id, errors)) for job in jobs]
    processes.append(context.Process(target=_api, args=(settings, errors, 40)))
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [process.exitcode for process in processes] == [0] * len(processes)

    store = Store(settings)
    try:
        for job in jobs:
            done = store.get_job(job.id)
            assert done.status == "succeeded" and done.progress.epoch == EPOCHS
            assert [row.epoch for row in store.history(job.id)] == list(range(1, EPOCHS + 1))
        assert len(store.list_jobs(tag="load", limit=100).items) == 40
    finally:
        store.dispose()
