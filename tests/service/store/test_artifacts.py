"""The artifact store: the same behaviour from a local folder and from S3 (moto's server on loopback)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from service.store import ArtifactError, Store
from service.store.artifacts import LocalArtifacts, S3Artifacts, open_artifact_store
from tests.utils.factories import create_job, epoch_metrics, read_object, store_checkpoint


@pytest.fixture(params=["local", "s3"])
def artifacts(request, tmp_path):
    if request.param == "local":
        store = LocalArtifacts(tmp_path / "artifacts")
    else:
        server = request.getfixturevalue("s3_server")
        url = server.new_bucket()
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        store = S3Artifacts(bucket, prefix, client=server.client(), work_dir=tmp_path / "work")
    yield store
    store.close()


def test_write_returns_size_and_sha256_and_reads_back(artifacts, tmp_path):
    data = b"0123456789" * 100_000
    stored = artifacts.write("jobs/j1/model.npz", lambda file: (file.write(data[:5]), file.write(data[5:])))
    assert (stored.key, stored.size_bytes, stored.sha256) == ("jobs/j1/model.npz", len(data),
                                                              hashlib.sha256(data).hexdigest())
    assert artifacts.exists("jobs/j1/model.npz") and not artifacts.exists("jobs/j1/other.npz")
    with artifacts.open("jobs/j1/model.npz") as handle:
        assert handle.read() == data
    assert b"".join(artifacts.stream("jobs/j1/model.npz", chunk_size=4096)) == data
    with artifacts.local_copy("jobs/j1/model.npz") as path:
        assert path.read_bytes() == data
    assert [(item.key, item.size_bytes) for item in artifacts.list("jobs/")] == [("jobs/j1/model.npz", len(data))]
    assert list(artifacts.list("datasets/")) == []


def test_numpy_writes_through_the_hashing_writer(artifacts):
    arrays = {"X": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array(["a", "b", "a"])}
    stored = artifacts.write("datasets/d.npz", lambda file: np.savez_compressed(file, **arrays))
    raw = read_object_from(artifacts, "datasets/d.npz")
    assert stored.sha256 == hashlib.sha256(raw).hexdigest() and stored.size_bytes == len(raw)
    with artifacts.local_copy("datasets/d.npz") as path, np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["X"], arrays["X"])
        np.testing.assert_array_equal(data["y"], arrays["y"])


def read_object_from(artifacts, key: str) -> bytes:
    with artifacts.open(key) as handle:
        return handle.read()


def test_a_failed_write_leaves_the_previous_object_intact_and_no_temp_file(artifacts, tmp_path):
    artifacts.write("jobs/j/checkpoints/epoch-000001.npz", lambda file: file.write(b"complete"))

    def half_then_disk_full(file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        artifacts.write("jobs/j/checkpoints/epoch-000001.npz", half_then_disk_full)
    with pytest.raises(OSError, match="disk full"):
        artifacts.write("jobs/j/checkpoints/epoch-000002.npz", half_then_disk_full)
    assert read_object_from(artifacts, "jobs/j/checkpoints/epoch-000001.npz") == b"complete"
    assert [item.key for item in artifacts.list("")] == ["jobs/j/checkpoints/epoch-000001.npz"]
    work = tmp_path / "work"
    assert not work.exists() or not list(work.iterdir())  # S3: the spooled temp files are gone


def test_missing_objects_raise_artifact_error_and_delete_is_idempotent(artifacts):
    with pytest.raises(ArtifactError, match="nothing.npz"):
        with artifacts.open("nothing.npz"):
            pass
    with pytest.raises(ArtifactError, match="nothing.npz"):
        artifacts.stream("nothing.npz")
    with pytest.raises(ArtifactError, match="nothing.npz"):
        with artifacts.local_copy("nothing.npz"):
            pass
    artifacts.write("a.npz", lambda file: file.write(b"x"))
    artifacts.delete("a.npz")
    artifacts.delete("a.npz")
    assert not artifacts.exists("a.npz")


@pytest.mark.parametrize("key", ["../escape.npz", "/etc/passwd", "jobs/../../x", "", "a//b", ".hidden", "a/./b"])
def test_keys_never_escape_the_store(artifacts, key):
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.write(key, lambda file: file.write(b"x"))
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.exists(key)


def test_presigned_urls_only_from_s3_when_asked(artifacts):
    import httpx

    artifacts.write("jobs/j/model.npz", lambda file: file.write(b"weights"))
    assert artifacts.download_url("jobs/j/model.npz", filename="m.npz", expires_seconds=0) is None
    url = artifacts.download_url("jobs/j/model.npz", filename="m.npz", expires_seconds=60)
    if isinstance(artifacts, LocalArtifacts):
        assert url is None and artifacts.local_path("jobs/j/model.npz").read_bytes() == b"weights"
    else:
        response = httpx.get(url)
        assert response.status_code == 200 and response.content == b"weights"
        assert 'filename="m.npz"' in response.headers["content-disposition"]


def test_artifact_urls(tmp_path):
    assert isinstance(open_artifact_store(str(tmp_path)), LocalArtifacts)
    assert open_artifact_store(f"file://{tmp_path}").root == tmp_path.resolve()
    s3 = open_artifact_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Artifacts) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    with pytest.raises(ValueError, match="ARTIFACT_URL"):
        open_artifact_store("ftp://host/x")


# ---------------------------------------------------------------- the store on S3: rows name complete objects


@pytest.fixture
def s3_store(s3_settings, sqlite_database_url, clock):
    store = Store(s3_settings(database_url=sqlite_database_url), clock=clock)
    yield store
    store.dispose()


def test_datasets_checkpoints_and_models_live_in_s3(s3_store):
    from service.specs import DatasetInfo

    info = DatasetInfo(rows=3, features=2, task="classification", classes=[0, 1])
    dataset = s3_store.create_dataset(owner=None, name="d", info=info,
                                      arrays={"X": np.zeros((3, 2), np.int8), "y": np.array([0, 1, 0])})
    assert s3_store.artifacts.exists(s3_store.dataset_key(dataset.id))
    job = create_job(s3_store, epochs=3, checkpoint={"every_epochs": 1, "keep_last": 1, "keep_best": False})
    s3_store.claim_job(job.id, "w", 30)
    acks = [s3_store.record_epoch(job.id, "w", epoch_metrics(epoch), is_best=False, lease_seconds=30,
                                  checkpoint=store_checkpoint(s3_store, job.id, epoch)) for epoch in (1, 2, 3)]
    assert [key for ack in acks for key in ack.pruned] == [s3_store.checkpoint_key(job.id, e) for e in (1, 2)]
    assert [item.key for item in s3_store.artifacts.list(f"jobs/{job.id}/")] == [s3_store.checkpoint_key(job.id, 3)]
    assert read_object(s3_store, s3_store.checkpoint_key(job.id, 3)) == f"checkpoint {job.id} 3".encode()


def test_orphan_sweep_removes_only_old_objects_no_row_names(store):
    job = create_job(store, epochs=3)
    store.claim_job(job.id, "w", 30)
    named = store_checkpoint(store, job.id, 1)
    store.record_epoch(job.id, "w", epoch_metrics(1), is_best=True, checkpoint=named, lease_seconds=30)
    crashed = store_checkpoint(store, job.id, 2)  # written, but its epoch never committed
    store.artifacts.write("datasets/0123.npz", lambda file: file.write(b"upload whose row never committed"))
    written = datetime.now(timezone.utc)  # objects carry the real time they were written
    assert store.sweep_orphans(older_than_seconds=3600, now=written) == []  # too young: may be in flight
    removed = store.sweep_orphans(older_than_seconds=3600, now=written + timedelta(hours=2))
    assert sorted(removed) == sorted([crashed.key, "datasets/0123.npz"])
    assert store.artifacts.exists(named.key) and not store.artifacts.exists(crashed.key)
    assert [c.epoch for c in store.list_checkpoints(job.id)] == [1]
