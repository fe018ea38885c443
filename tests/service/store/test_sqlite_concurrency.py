"""SQLite with an API process and worker processes writing together: no "database is locked"."""
from __future__ import annotations

import itertools
import multiprocessing
import traceback

import httpx
import pytest

from bench.stack import running_stack
from service.config import Settings
from service.store import Store
from tests.utils.db import FakeClock, SequentialIds
from tests.utils.factories import create_job, epoch_metrics, store_checkpoint

WORKERS = 4
EPOCHS = 60
LEASE = 3600.0


def _write_epochs(settings, job_id: str, errors, *, epochs: int, checkpoint_every: int, best_every: int) -> None:
    """A worker's writes without the training: claim, epochs × (record_epoch + lease/cancel poll), finish.

    Its own Store and engine, as in a forked Celery child; failures are reported to the parent."""
    store = Store(settings)
    try:
        worker_id = f"writer-{job_id}"
        assert store.claim_job(job_id, worker_id, LEASE) is not None
        for epoch in range(1, epochs + 1):
            checkpoint = None
            if epoch % checkpoint_every == 0:
                checkpoint = store_checkpoint(store, job_id, epoch, b"x" * 1000)
            store.record_epoch(job_id, worker_id, epoch_metrics(epoch), is_best=epoch % best_every == 0,
                               checkpoint=checkpoint, lease_seconds=LEASE)
            store.cancel_requested(job_id, worker_id)
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
    processes = [context.Process(target=_write_epochs, args=(settings, job.id, errors),
                                 kwargs=dict(epochs=EPOCHS, checkpoint_every=5, best_every=3)) for job in jobs]
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


LOADED_WRITERS = 8
LOADED_EPOCHS = 500


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_eight_writers_while_the_api_serves_reads(tmp_path):
    """8 processes × 500 epoch writes on one SQLite file while a real `backprop api` answers reads."""
    database_url = f"sqlite:///{tmp_path}/backprop.db"
    with running_stack(tmp_path, database_url, f"sqla+sqlite:///{tmp_path}/broker.db", workers=0) as stack:
        settings = Settings(_env_file=None, database_url=database_url, artifact_url=stack.env["ARTIFACT_URL"])
        store = Store(settings)
        jobs = [create_job(store, epochs=LOADED_EPOCHS).id for _ in range(LOADED_WRITERS)]
        store.dispose()  # nothing open across the fork

        context = multiprocessing.get_context("fork")
        errors = context.Queue()
        writers = [context.Process(target=_write_epochs, args=(settings, job_id, errors),
                                      kwargs=dict(epochs=LOADED_EPOCHS, checkpoint_every=50, best_every=7)) for job_id in jobs]
        for writer in writers:
            writer.start()
        reads, bad_reads = 0, []
        with stack.client() as client:
            paths = itertools.cycle([f"/v1/jobs/{jobs[0]}", f"/v1/jobs/{jobs[-1]}/history", "/v1/jobs?limit=20"])
            while any(writer.is_alive() for writer in writers):
                path = next(paths)
                try:
                    response = client.get(path)
                    if response.status_code != 200:
                        bad_reads.append((path, response.status_code, response.text[:300]))
                except httpx.HTTPError as error:
                    bad_reads.append((path, repr(error)))
                reads += 1
        for writer in writers:
            writer.join(60)
        failures = []
        while not errors.empty():
            failures.append(errors.get())
        assert failures == [] and bad_reads == []
        assert [writer.exitcode for writer in writers] == [0] * LOADED_WRITERS
        assert reads > LOADED_WRITERS  # the API answered throughout
        assert "database is locked" not in stack.logs()

        store = Store(settings)
        try:
            for job_id in jobs:
                done = store.get_job(job_id)
                assert (done.status, done.progress.epoch) == ("succeeded", LOADED_EPOCHS)
                assert [row.epoch for row in store.history(job_id)] == list(range(1, LOADED_EPOCHS + 1))
        finally:
            store.dispose()
