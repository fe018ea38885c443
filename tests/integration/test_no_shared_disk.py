"""Many machines, no shared disk (issue 10, req. 2): the API and two workers, each in a private
folder of its own (cwd, TMPDIR and WORK_DIR), on PostgreSQL, a private Redis and an S3 server on
loopback (moto's server mode). Upload, train, kill -9 the worker that runs the job, resume on the
other, download: every artifact travels through S3, and nothing is written to a shared folder.
"""
from __future__ import annotations

import hashlib
import io
import re
import signal
from contextlib import ExitStack

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.integration.harness import postgres_database, private_redis, running_stack, wait_for_job
from tests.integration.test_reliability import (
    FAST_RECOVERY, SLOW_EPOCHS, TERMINAL, assert_same_model, claims, epochs_of, wait_for_progress, wait_until_ready,
    worker_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def upload_digits(client) -> str:
    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, X=(digits.data / 16).astype(np.float32), y=digits.target)
    response = client.post("/v1/datasets", files={"file": ("digits.npz", buffer.getvalue())}, data={"name": "digits"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def files_under(folder) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_upload_train_kill_resume_download_through_s3_only(tmp_path, s3_server):
    bucket_url = s3_server.new_bucket()
    with ExitStack() as resources:
        database_url = resources.enter_context(postgres_database())
        redis = resources.enter_context(private_redis(tmp_path / "redis"))
        stack = resources.enter_context(running_stack(
            tmp_path / "stack", database_url, redis.url, workers=2, private_dirs=True,
            extra_env={**FAST_RECOVERY, **s3_server.env(), "ARTIFACT_URL": bucket_url}))
        client = resources.enter_context(stack.client())
        wait_until_ready(stack, "worker0", "worker1")

        dataset_id = upload_digits(client)
        spec = {"dataset": {"id": dataset_id, "validation_split": 0.2}, "epochs": 24, "seed": 3,
                "checkpoint": {"every_epochs": 3}, **SLOW_EPOCHS}
        job_id = client.post("/v1/jobs", json={**spec, "name": "crash"}).json()["id"]
        at_kill = wait_for_progress(client, job_id, 5)
        assert at_kill["status"] == "running" and at_kill["progress"]["epoch"] < 24, at_kill
        runner = next(name for name in ("worker0", "worker1") if claims(worker_log(stack, name), job_id))
        survivor = "worker1" if runner == "worker0" else "worker0"
        stack.stop(runner, signal.SIGKILL)  # the whole process group, mid-epoch

        done = wait_for_job(client, job_id, TERMINAL, timeout=120, stack=stack)
        assert (done["status"], done["attempt"]) == ("succeeded", 2), done
        [resumed_after] = claims(worker_log(stack, survivor), job_id)
        assert resumed_after >= 3 and resumed_after % 3 == 0, resumed_after
        assert [row["epoch"] for row in epochs_of(client, job_id)] == list(range(1, 25))

        response = client.get(f"/v1/jobs/{job_id}/model")
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == response.headers["x-model-sha256"]
        reference_id = client.post("/v1/jobs", json={**spec, "name": "reference"}).json()["id"]
        assert wait_for_job(client, reference_id, TERMINAL, timeout=120, stack=stack)["attempt"] == 1
        assert_same_model(client, job_id, reference_id)

        # every artifact is in the bucket ...
        s3 = s3_server.client()
        bucket, _, prefix = bucket_url.removeprefix("s3://").partition("/")
        keys = {item["Key"].removeprefix(prefix + "/")
                for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
        assert f"datasets/{dataset_id}.npz" in keys
        assert {f"jobs/{job_id}/model.npz", f"jobs/{reference_id}/model.npz"} <= keys
        assert any(re.fullmatch(rf"jobs/{job_id}/checkpoints/epoch-\d{{6}}\.npz", key) for key in keys)
        # ... and no folder holds one: the shared folder has only the logs, each private folder
        # only what its own process left in its temp folder (nothing, once a copy is used)
        shared = {name for name in files_under(stack.workdir) if not name.startswith("private-")}
        assert all(name.endswith(".log") for name in shared), shared
        for name in ("api", "worker0", "worker1"):
            leftovers = {path for path in files_under(stack.process_dir(name)) if path.endswith(".npz")}
            assert not leftovers, (name, leftovers)
