"""Crashes, duplicates, a broker that forgets, cancels across restarts: real processes only.

Each test starts its own stack (`backprop api` + `backprop worker` subprocesses) with short
leases and a fast reconciler, on the embedded defaults (SQLite + SQLAlchemy broker) and/or on
PostgreSQL + a private redis-server started on a free port (never the shared one). Workers are
killed with SIGKILL on their whole process group, as a crash or the OOM killer would.
"""
from __future__ import annotations

import io
import json
import re
import signal
import time
from contextlib import ExitStack

import numpy as np
import pytest

from service.config import Settings
from service.queue import Enqueuer, celery_client
from service.store import Store
from tests.integration.harness import postgres_database, private_redis, running_stack, wait_for_job
from tests.utils.factories import create_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

TERMINAL = ("succeeded", "failed", "cancelled")
FAST_RECOVERY = {
    "LEASE_SECONDS": "2",
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "2",
    "BLAS_THREADS": "1",
}
# ~0.15 s per epoch on digits: long enough to kill mid-run, short enough for a test
SLOW_EPOCHS = {"model": {"hidden_layers": [{"units": 256}, {"units": 256}]}, "batch_size": 8}


def start_stack(kind: str, workdir, resources: ExitStack, *, workers: int = 1, env: dict | None = None,
                s3=None):
    """kind: "embedded" or "redis_postgres", with "+s3" for artifacts in a bucket of `s3` (an S3Server)
    and each process in a private folder."""
    kind, _, artifacts = kind.partition("+")
    if artifacts == "s3":
        env = {**(env or {}), **s3.env(), "ARTIFACT_URL": s3.new_bucket()}
    if kind == "embedded":
        database_url, broker_url = f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db"
    else:
        database_url = resources.enter_context(postgres_database())
        broker_url = resources.enter_context(private_redis(workdir / "redis")).url
    return resources.enter_context(
        running_stack(workdir, database_url, broker_url, workers=workers, extra_env={**FAST_RECOVERY, **(env or {})},
                      private_dirs=artifacts == "s3"))


@pytest.fixture
def s3(request):
    """The session's S3 server for "+s3" kinds (started only when a test asks for one)."""
    kind = request.node.callspec.params.get("kind", "") if hasattr(request.node, "callspec") else ""
    return request.getfixturevalue("s3_server") if kind.endswith("+s3") else None


def stack_settings(stack) -> Settings:
    return Settings(_env_file=None, database_url=stack.env["DATABASE_URL"], broker_url=stack.env["BROKER_URL"],
                    artifact_url=stack.env["ARTIFACT_URL"], s3_endpoint_url=stack.env.get("S3_ENDPOINT_URL"),
                    training_queue=stack.env["TRAINING_QUEUE"])


def worker_log(stack, name: str) -> str:
    path = stack.workdir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_until_ready(stack, *names: str, timeout: float = 60) -> None:
    """Until each worker's consumer is up (Celery logs "<node> ready.")."""
    deadline = time.monotonic() + timeout
    while not all(re.search(r"@\S+ ready\.", worker_log(stack, name)) for name in names):
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {names} not ready in {timeout}s\n{stack.logs()}")
        time.sleep(0.1)


def claims(log: str, job_id: str) -> list[int]:
    """The `resuming after epoch N` of each claim of the job in a worker log."""
    return [int(n) for n in re.findall(rf"job {job_id}: claimed by \S+, attempt \d+, resuming after epoch (\d+)", log)]


def wait_for_progress(client, job_id: str, epoch: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]["epoch"] >= epoch or job["status"] in TERMINAL:
            return job
        time.sleep(0.03)
    raise AssertionError(f"job {job_id} did not reach epoch {epoch} in {timeout}s: {job}")


RUN_FIELDS = ("attempt", "resumed", "resumed_from_epoch")  # the model card's record of the finishing run


def model_arrays(client, job_id: str) -> dict[str, np.ndarray]:
    """The downloaded model's arrays, with its meta less the model card's run fields: by design a
    resumed job's file differs from an uninterrupted run's there and nowhere else (README)."""
    response = client.get(f"/v1/jobs/{job_id}/model")
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(str(arrays["meta"]))
    for name in RUN_FIELDS:
        meta["card"].pop(name)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def epochs_of(client, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/history").json()["epochs"]


def assert_same_history(rows: list[dict], reference_rows: list[dict]) -> None:
    """Epoch by epoch equal but for the wall-clock `seconds`."""
    for row, reference_row in zip(rows, reference_rows, strict=True):
        row.pop("seconds"), reference_row.pop("seconds")
        assert row == reference_row


def assert_same_model(client, job_id: str, reference_id: str) -> None:
    """The two jobs' model files hold the same arrays, bit for bit (see model_arrays)."""
    resumed, uninterrupted = model_arrays(client, job_id), model_arrays(client, reference_id)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)


@pytest.mark.parametrize("kind", ["redis_postgres"])  # embedded: the max-attempts test below kills workers too;
# S3: tests/integration/test_no_shared_disk.py kills a worker with artifacts in S3
def test_kill_9_mid_epoch_resumes_from_the_checkpoint_and_ends_as_an_uninterrupted_run(kind, tmp_path):
    spec = {"name": "crash", "dataset": {"builtin": "digits", "validation_split": 0.2}, "epochs": 30, "seed": 7,
            "checkpoint": {"every_epochs": 3}, **SLOW_EPOCHS}
    with ExitStack() as resources:
        stack = start_stack(kind, tmp_path, resources)
        client = resources.enter_context(stack.client())
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        at_kill = wait_for_progress(client, job_id, 5)
        stack.stop("worker0", signal.SIGKILL)  # the whole process group: main process and pool child
        assert at_kill["status"] == "running" and at_kill["progress"]["epoch"] < 30, at_kill
        killed_at = client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"]

        stack.start_worker("worker1")  # its reconciler re-sends the job once the dead lease expires
        done = wait_for_job(client, job_id, TERMINAL, timeout=90, stack=stack)
        assert (done["status"], done["stop_reason"], done["attempt"]) == ("succeeded", "completed", 2), done
        [resumed_after] = claims(worker_log(stack, "worker1"), job_id)
        card = done["model_card"]
        assert (card["attempt"], card["resumed"], card["resumed_from_epoch"]) == (2, True, resumed_after)
        assert resumed_after % 3 == 0 and 3 <= resumed_after <= killed_at, (resumed_after, killed_at)
        history = epochs_of(client, job_id)
        assert [row["epoch"] for row in history] == list(range(1, 31))  # each epoch exactly once

        # the same spec, never interrupted
        reference_id = client.post("/v1/jobs", json={**spec, "name": "reference"}).json()["id"]
        reference = wait_for_job(client, reference_id, TERMINAL, timeout=90, stack=stack)
        assert reference["status"] == "succeeded" and reference["attempt"] == 1, reference
        assert_same_history(history, epochs_of(client, reference_id))
        assert_same_model(client, job_id, reference_id)


@pytest.mark.parametrize("target", ["process_group", "main_process"])
def test_a_graceful_stop_of_all_workers_hands_the_running_job_to_the_next_one(target, tmp_path):
    spec = {"dataset": {"builtin": "digits"}, "epochs": 30, "checkpoint": {"every_epochs": 3}, **SLOW_EPOCHS}
    with ExitStack() as resources:
        stack = start_stack("redis_postgres", tmp_path, resources)
        client = resources.enter_context(stack.client())
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        assert wait_for_progress(client, job_id, 4)["status"] == "running"
        if target == "process_group":  # systemd
            stack.stop("worker0", signal.SIGTERM, timeout=30)
        else:  # docker stop, Kubernetes: PID 1 only
            worker = stack.processes.pop("worker0")
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)

        handed_back = client.get(f"/v1/jobs/{job_id}").json()
        assert (handed_back["status"], handed_back["attempt"]) == ("queued", 0), handed_back
        assert f"job {job_id}: shutting down; handed back (queued)" in worker_log(stack, "worker0")

        stack.start_worker("worker1")
        done = wait_for_job(client, job_id, TERMINAL, timeout=90, stack=stack)
        assert (done["status"], done["attempt"]) == ("succeeded", 1), done
        [resumed_after] = claims(worker_log(stack, "worker1"), job_id)
        assert resumed_after >= 3 and resumed_after % 3 == 0
        assert [row["epoch"] for row in epochs_of(client, job_id)] == list(range(1, 31))


@pytest.mark.parametrize("kind", ["redis_postgres", "redis_postgres+s3"])  # the claim itself: tests/service/store
def test_the_same_job_delivered_twice_at_once_runs_once(kind, tmp_path, s3):
    with ExitStack() as resources:
        stack = start_stack(kind, tmp_path, resources, workers=2, s3=s3)
        client = resources.enter_context(stack.client())
        settings = stack_settings(stack)
        store = Store(settings)
        resources.callback(store.dispose)
        enqueuer = Enqueuer(celery_client(settings))
        resources.callback(enqueuer.close)
        wait_until_ready(stack, "worker0", "worker1")  # both idle: each takes one message
        job = create_job(store, builtin="digits", epochs=12, **SLOW_EPOCHS)
        enqueuer.enqueue(job.id)
        enqueuer.enqueue(job.id)  # two messages, one task id; each idle worker takes one

        done = wait_for_job(client, job.id, TERMINAL, timeout=90, stack=stack)
        assert (done["status"], done["attempt"]) == ("succeeded", 1), done
        assert [row["epoch"] for row in epochs_of(client, job.id)] == list(range(1, 13))
        logs = [worker_log(stack, "worker0"), worker_log(stack, "worker1")]
        claimed = [len(claims(log, job.id)) for log in logs]
        skipped = [log.count(f"job {job.id}: not claimable") for log in logs]
        assert sorted(claimed) == [0, 1], claimed  # one claim, in one worker
        assert skipped[claimed.index(0)] >= 1, skipped  # the other worker's delivery did nothing


def test_a_job_that_keeps_killing_its_worker_ends_failed_after_max_attempts(tmp_path):
    with ExitStack() as resources:
        stack = start_stack("embedded", tmp_path, resources, env={"MAX_ATTEMPTS": "2"})
        client = resources.enter_context(stack.client())
        job_id = client.post("/v1/jobs", json={"dataset": {"builtin": "digits"}, "epochs": 10_000,
                                               **SLOW_EPOCHS}).json()["id"]
        wait_for_progress(client, job_id, 1)
        stack.stop("worker0", signal.SIGKILL)
        stack.start_worker("worker1")
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}").json()["attempt"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        stack.stop("worker1", signal.SIGKILL)  # the second attempt dies too
        stack.start_worker("worker2")
        done = wait_for_job(client, job_id, TERMINAL, timeout=60, stack=stack)
        assert (done["status"], done["stop_reason"], done["attempt"]) == ("failed", "error", 2), done
        assert done["error"].startswith("gave up after 2 attempts"), done["error"]
        assert claims(worker_log(stack, "worker2"), job_id) == []  # no third run


@pytest.mark.parametrize("kind", ["embedded", "redis_postgres"])
def test_a_job_committed_but_never_enqueued_is_sent_by_the_reconciler(kind, tmp_path):
    with ExitStack() as resources:
        stack = start_stack(kind, tmp_path, resources)
        client = resources.enter_context(stack.client())
        store = Store(stack_settings(stack))
        resources.callback(store.dispose)
        job = create_job(store, builtin="iris", epochs=3)  # the API crashed right after its commit
        done = wait_for_job(client, job.id, TERMINAL, timeout=60, stack=stack)
        assert (done["status"], done["attempt"]) == ("succeeded", 1), done
        assert re.search(rf"reconciler: sent \d+ job\(s\) again: .*{job.id}", worker_log(stack, "worker0"))


@pytest.mark.parametrize("kind", ["redis_postgres", "embedded", "redis_postgres+s3"])
def test_cancel_survives_a_restart_of_all_workers(kind, tmp_path, s3):
    long_job = {"dataset": {"builtin": "digits"}, "epochs": 10_000, **SLOW_EPOCHS}
    with ExitStack() as resources:
        stack = start_stack(kind, tmp_path, resources, s3=s3)
        client = resources.enter_context(stack.client())
        running = client.post("/v1/jobs", json={**long_job, "name": "running"}).json()
        queued = client.post("/v1/jobs", json={**long_job, "name": "queued"}).json()
        assert wait_for_progress(client, running["id"], 1)["status"] == "running"

        stack.stop("worker0", signal.SIGKILL)  # every worker is gone
        assert client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        requested = client.post(f"/v1/jobs/{running['id']}/cancel").json()
        assert (requested["status"], requested["cancel_requested"]) == ("running", True)

        stack.start_worker("worker1")
        done = wait_for_job(client, running["id"], TERMINAL, timeout=60, stack=stack)
        assert (done["status"], done["stop_reason"]) == ("cancelled", "cancelled"), done
        assert done["attempt"] == 1  # it never ran again
        assert client.get(f"/v1/jobs/{running['id']}/checkpoints").json(), "its checkpoints are kept"

        probe = client.post("/v1/jobs", json={"dataset": {"builtin": "xor"}, "epochs": 2}).json()
        assert wait_for_job(client, probe["id"], TERMINAL, timeout=60, stack=stack)["status"] == "succeeded"
        never = client.get(f"/v1/jobs/{queued['id']}").json()
        assert (never["status"], never["attempt"], never["started_at"]) == ("cancelled", 0, None), never
        assert claims(worker_log(stack, "worker1"), queued["id"]) == []


def test_redis_restarted_empty_with_jobs_queued_and_running(tmp_path):
    with ExitStack() as resources:
        database_url = resources.enter_context(postgres_database())
        redis = resources.enter_context(private_redis(tmp_path / "redis"))
        stack = resources.enter_context(running_stack(tmp_path, database_url, redis.url, extra_env=FAST_RECOVERY))
        client = resources.enter_context(stack.client())
        jobs = [client.post("/v1/jobs", json={"name": f"job{i}", "dataset": {"builtin": "digits"}, "epochs": epochs,
                                              **SLOW_EPOCHS}).json()
                for i, epochs in enumerate((16, 4, 4))]
        assert wait_for_progress(client, jobs[0]["id"], 2)["status"] == "running"
        assert [client.get(f"/v1/jobs/{job['id']}").json()["status"] for job in jobs[1:]] == ["queued", "queued"]

        redis.restart()  # empty: the queued jobs' messages and the running one's are gone

        for job in jobs:
            done = wait_for_job(client, job["id"], TERMINAL, timeout=90, stack=stack)
            assert done["status"] == "succeeded", done
            epochs = done["progress"]["epochs"]
            assert [row["epoch"] for row in epochs_of(client, job["id"])] == list(range(1, epochs + 1))
        # the running job was neither cancelled nor duplicated by the broker's restart
        assert client.get(f"/v1/jobs/{jobs[0]['id']}").json()["attempt"] == 1
