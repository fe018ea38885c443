"""The product end to end: HTTP API process → broker → real Celery worker process → SQL → model file.

Runs once on the embedded defaults (SQLite + SQLAlchemy broker) and once on Redis + PostgreSQL at
127.0.0.1 (required under CI=true). Nothing here imports the service: it talks HTTP only, and reads
the downloaded model with plain NumPy.
"""
from __future__ import annotations

import hashlib
import io
import json
from contextlib import ExitStack

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tests.utils.readme import run_model_snippet, run_onnx_snippet, run_snippet
from tests.integration.harness import (
    fresh_redis,
    postgres_database,
    running_stack,
    wait_for_job,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["embedded", "redis_postgres"])
def stack(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    with ExitStack() as resources:
        if request.param == "embedded":
            database_url = f"sqlite:///{workdir}/backprop.db"
            broker_url = f"sqla+sqlite:///{workdir}/broker.db"
        else:
            database_url = resources.enter_context(postgres_database())
            broker_url = fresh_redis()
        yield resources.enter_context(running_stack(workdir, database_url, broker_url))


@pytest.fixture(scope="module")
def client(stack):
    with stack.client() as http:
        yield http


@pytest.fixture(scope="module")
def digits_split():
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    return train_test_split(X, digits.target, test_size=0.25, stratify=digits.target, random_state=0)


def upload_npz(client, name: str, **arrays) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = client.post("/v1/datasets", files={"file": (f"{name}.npz", buffer.getvalue())},
                           data={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def plain_numpy_predict(model_bytes: bytes, workdir):
    """Run the downloaded model with the README's NumPy-only snippet; returns label predictions."""
    path = workdir / "model.npz"
    path.write_bytes(model_bytes)
    meta = json.loads(str(np.load(path, allow_pickle=False)["meta"]))
    source = run_model_snippet()
    return lambda X: np.asarray(meta["classes"])[run_snippet(source, path, X).argmax(1)]


def test_health_endpoints(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200


def test_digits_job_trains_and_its_model_runs_with_plain_numpy(client, stack, digits_split):
    X_train, X_test, y_train, y_test = digits_split
    dataset = upload_npz(client, "digits-train", X=X_train, y=y_train)
    assert (dataset["rows"], dataset["features"], dataset["task"]) == (len(X_train), 64, "classification")

    spec = {
        "name": "digits-e2e", "tags": ["e2e", "digits"],
        "dataset": {"id": dataset["id"], "validation_split": 0.1},
        "model": {"hidden_layers": [{"units": 64, "activation": "relu"}]},
        "optimizer": {"name": "adam", "learning_rate": 0.003},
        "epochs": 25, "batch_size": 32, "seed": 3,
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert job["status"] in ("queued", "running")

    job = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), stack=stack)
    assert job["status"] == "succeeded", job
    assert job["stop_reason"] == "completed"
    assert job["progress"] == {"epoch": 25, "epochs": 25}
    assert job["attempt"] == 1
    assert job["started_at"] and job["finished_at"]

    history = client.get(f"/v1/jobs/{job['id']}/history").json()["epochs"]
    assert [row["epoch"] for row in history] == list(range(1, 26))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(row["val_accuracy"] is not None and row["lr"] is not None for row in history)
    csv_text = client.get(f"/v1/jobs/{job['id']}/history", params={"format": "csv"}).text
    assert csv_text.splitlines()[0].startswith("epoch,train_loss,val_loss")
    assert len(csv_text.strip().splitlines()) == 26

    model = client.get(f"/v1/jobs/{job['id']}/model")
    assert model.status_code == 200
    assert model.headers["x-model-sha256"] == hashlib.sha256(model.content).hexdigest()
    predict = plain_numpy_predict(model.content, stack.workdir)
    accuracy = float((predict(X_test) == y_test).mean())
    assert accuracy >= 0.95, accuracy

    listed = client.get("/v1/jobs", params={"tag": "e2e"}).json()["items"]
    assert job["id"] in [item["id"] for item in listed]
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
    assert checkpoints and checkpoints[-1]["epoch"] == 25


def test_early_stopping_is_visible_in_the_job(client, stack):
    # min_delta larger than any possible improvement: epoch 1 is the best, stop after patience epochs
    spec = {
        "dataset": {"builtin": "moons"}, "epochs": 50, "seed": 1,
        "early_stopping": {"monitor": "val_loss", "min_delta": 100.0, "patience": 3},
    }
    job = client.post("/v1/jobs", json=spec).json()
    job = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), stack=stack)
    assert job["status"] == "succeeded", job
    assert job["stop_reason"] == "early_stopped"
    assert job["best_epoch"] == 1
    assert job["progress"]["epoch"] == 4
    assert len(client.get(f"/v1/jobs/{job['id']}/history").json()["epochs"]) == 4


def test_cancel_running_and_queued_jobs(client, stack):
    long_spec = {"dataset": {"builtin": "digits"}, "epochs": 10_000, "batch_size": 8, "name": "long",
                 "model": {"hidden_layers": [{"units": 256}, {"units": 256}]}}
    running = client.post("/v1/jobs", json=long_spec).json()
    queued = client.post("/v1/jobs", json={**long_spec, "name": "never-starts"}).json()

    running = wait_for_job(client, running["id"], ("running",), timeout=60, stack=stack)
    # wait for at least one recorded epoch so a checkpoint exists
    for _ in range(300):
        if client.get(f"/v1/jobs/{running['id']}").json()["progress"]["epoch"] >= 1:
            break
        import time
        time.sleep(0.1)

    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 202, response.text
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"

    assert client.post(f"/v1/jobs/{running['id']}/cancel").status_code == 202
    done = wait_for_job(client, running["id"], ("cancelled", "succeeded", "failed"), timeout=30, stack=stack)
    assert done["status"] == "cancelled" and done["stop_reason"] == "cancelled", done
    assert done["progress"]["epoch"] < 10_000
    assert client.get(f"/v1/jobs/{running['id']}/checkpoints").json(), "the last checkpoint is kept"

    # the worker is free again: the cancelled queued job must still never have started
    probe = client.post("/v1/jobs", json={"dataset": {"builtin": "xor"}, "epochs": 2}).json()
    wait_for_job(client, probe["id"], ("succeeded",), timeout=60, stack=stack)
    never = client.get(f"/v1/jobs/{queued['id']}").json()
    assert never["status"] == "cancelled" and never["started_at"] is None and never["attempt"] == 0


def test_training_failure_ends_the_job_failed_with_a_message(client, stack):
    spec = {"dataset": {"builtin": "sine"}, "epochs": 30, "seed": 0,
            "optimizer": {"name": "sgd", "learning_rate": 10.0},
            "model": {"hidden_layers": [{"units": 64, "activation": "relu"}] * 3}}
    job = client.post("/v1/jobs", json=spec).json()
    job = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), stack=stack)
    assert job["stop_reason"] == "diverged", job
    assert job["status"] == "failed"
    assert "diverged" in job["error"]


def test_the_same_job_twice_gives_the_same_model_and_onnx_files(client, stack):
    spec = {"name": "twice", "dataset": {"builtin": "digits"}, "epochs": 4, "batch_size": 64, "seed": 11,
            "model": {"hidden_layers": [{"units": 32, "activation": "elu", "batch_norm": True, "dropout": 0.1}]}}
    submitted = [client.post("/v1/jobs", json=spec).json() for _ in range(2)]
    jobs = [wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), stack=stack) for job in submitted]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs

    files = [client.get(f"/v1/jobs/{job['id']}/model") for job in jobs]
    onnx_files = [client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"}) for job in jobs]
    for response in files + onnx_files:
        assert response.status_code == 200, response.text
        assert response.headers["x-model-sha256"] == hashlib.sha256(response.content).hexdigest()
    assert files[0].headers["x-model-sha256"] == files[1].headers["x-model-sha256"]
    assert onnx_files[0].headers["x-model-sha256"] == onnx_files[1].headers["x-model-sha256"]
    assert files[0].headers["x-model-sha256"] != onnx_files[0].headers["x-model-sha256"]

    card = jobs[0]["model_card"]
    assert jobs[1]["model_card"] == card
    assert (card["dataset_id"], card["seed"], card["attempt"], card["resumed"]) == ("builtin:digits", 11, 1, False)
    assert card["blas"]["threads"] == 1  # BLAS_THREADS' default in the worker
    meta = json.loads(str(np.load(io.BytesIO(files[0].content), allow_pickle=False)["meta"]))
    assert meta["card"] == card
    labelled = {key: value for key, value in jobs[0]["spec"].items() if key not in ("name", "tags")}
    canonical = json.dumps(labelled, sort_keys=True, separators=(",", ":")).encode()
    assert card["spec_sha256"] == hashlib.sha256(canonical).hexdigest()  # the README's recipe

    # POST /predict answers what onnxruntime says on the downloaded ONNX file (the README's snippet)
    X = load_digits().data[::37]
    response = client.post(f"/v1/jobs/{jobs[0]['id']}/predict", json={"inputs": X.tolist()})
    assert response.status_code == 200, response.text
    path = stack.workdir / "model.onnx"
    path.write_bytes(onnx_files[0].content)
    label, probabilities = run_snippet(run_onnx_snippet(), path, X, "outputs")
    np.testing.assert_allclose(response.json()["probabilities"], probabilities, rtol=1e-5, atol=1e-5)
    assert (np.asarray(response.json()["classes"]) == label).mean() > 0.95  # near ties may round apart
