"""Store.create_job(max_queued=...): the per-owner queued-job cap holds under concurrent submissions."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.store import QueueFull
from tests.utils.factories import create_job, job_spec


def test_cap_counts_only_queued_jobs_of_that_owner(store):
    first = create_job(store, owner="alice")
    create_job(store, owner="bob")
    create_job(store, owner=None)
    spec = job_spec()
    store.create_job(owner="alice", spec=spec, dataset_id="builtin:xor", max_queued=2)
    with pytest.raises(QueueFull, match="owner 'alice' already has 2 queued jobs"):
        store.create_job(owner="alice", spec=spec, dataset_id="builtin:xor", max_queued=2)
    store.request_cancel(first.id)
    store.create_job(owner="alice", spec=spec, dataset_id="builtin:xor", max_queued=2)
    with pytest.raises(QueueFull, match="this API already has 1 queued jobs"):
        store.create_job(owner=None, spec=spec, dataset_id="builtin:xor", max_queued=1)


def test_concurrent_submissions_never_overshoot(make_store):
    stores = [make_store() for _ in range(4)]  # separate engines: separate connections, as API processes have
    spec = job_spec()

    def submit(index: int) -> str:
        try:
            stores[index % len(stores)].create_job(owner="alice", spec=spec, dataset_id="builtin:xor", max_queued=5)
            return "ok"
        except QueueFull:
            return "full"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(submit, range(40)))
    assert outcomes.count("ok") == 5
    assert len(stores[0].list_jobs(owner="alice", status="queued").items) == 5
