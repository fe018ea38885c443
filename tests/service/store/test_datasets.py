"""Store: datasets (builtin and uploaded), files written atomically and owned (SQLite and PostgreSQL)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from service.specs import BUILTIN_DATASETS, DatasetInfo
from service.store import NotFound

INFO = DatasetInfo(rows=3, features=2, task="classification", classes=["a", "b"])


def arrays():
    return {"X": np.arange(6, dtype=np.float32).reshape(3, 2), "y": np.array(["a", "b", "a"])}


def test_builtins_are_listed_and_described(store):
    listed = store.list_datasets()
    assert [d.id for d in listed] == [f"builtin:{name}" for name in sorted(BUILTIN_DATASETS)]
    digits = store.get_dataset("builtin:digits")
    assert digits.source == "builtin" and digits.name == "digits" and digits.features == 64
    assert store.dataset_info("builtin:sine") == BUILTIN_DATASETS["sine"]
    with pytest.raises(NotFound):
        store.get_dataset("builtin:mnist")


def test_create_dataset_writes_file_and_row(store):
    created = store.create_dataset(owner="alice", name="tiny", info=INFO, arrays=arrays())
    assert created.source == "upload" and created.rows == 3 and created.classes == ["a", "b"]
    assert created.created_at is not None
    path = store.artifacts.local_path(store.dataset_key(created.id))
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"X", "y"}
        np.testing.assert_array_equal(data["X"], arrays()["X"])
    assert store.get_dataset(created.id) == created
    assert store.get_dataset(created.id, owner="alice") == created
    assert store.dataset_info(created.id) == INFO
    assert [d.id for d in store.list_datasets(owner="alice")][-1] == created.id
    assert created.id not in [d.id for d in store.list_datasets(owner="bob")]
    with pytest.raises(NotFound):
        store.get_dataset(created.id, owner="bob")
    assert not list(path.parent.glob("*.tmp-*"))  # no temp files left behind
    assert len(hashlib.sha256(path.read_bytes()).hexdigest()) == 64


def test_failed_commit_leaves_no_file(store):
    bad = DatasetInfo.model_construct(rows=3, features=2, task="bogus", classes=[], outputs=1,
                                      has_validation=False, val_rows=0)
    with pytest.raises(Exception):
        store.create_dataset(owner=None, name="bad", info=bad, arrays=arrays())
    assert not list(store.artifacts.list("datasets/"))
    assert [d.source for d in store.list_datasets()] == ["builtin"] * len(BUILTIN_DATASETS)


def test_object_arrays_are_refused(store):
    with pytest.raises(ValueError, match="object"):
        store.create_dataset(owner=None, name="obj", info=INFO,
                             arrays={"X": np.zeros((3, 2)), "y": np.array([1, "a", None], dtype=object)})
    assert [d.source for d in store.list_datasets()] == ["builtin"] * len(BUILTIN_DATASETS)


def test_job_on_uploaded_dataset_claims_its_path(store):
    from tests.utils.factories import job_spec

    created = store.create_dataset(owner="alice", name="tiny", info=INFO, arrays=arrays())
    spec = job_spec("xor").model_copy(update={"dataset": job_spec("xor").dataset.model_copy(
        update={"builtin": None, "id": created.id})})
    with pytest.raises(NotFound):  # another owner's dataset
        store.create_job(owner="bob", spec=spec, dataset_id=created.id)
    job = store.create_job(owner="alice", spec=spec, dataset_id=created.id)
    claim = store.claim_job(job.id, "w", 30)
    assert claim.dataset_key == store.dataset_key(created.id)
