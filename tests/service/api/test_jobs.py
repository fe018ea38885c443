"""/v1/jobs: submission (validate, find the dataset, resolve, commit, then enqueue), reads, cancel,
history, checkpoints and the model download, against a real store and a real broker."""
from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pytest

from service.queue import TRAIN_TASK, Enqueuer, celery_client
from service.specs import EpochMetrics
from tests.utils.api import job_body
from tests.utils.factories import epoch_metrics, read_object, store_checkpoint, store_model
from tests.utils.uploads import regression_arrays

WORKER = "test-worker"


def job_ids(api, **params) -> list[str]:
    response = api.client.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def assert_nothing_stored(api) -> None:
    assert job_ids(api) == []
    assert api.published() == []


# ---------------------------------------------------------------- submission


def test_submit_commits_the_job_then_publishes_its_id(api):
    response = api.submit(**job_body("digits", name="first", tags=["a", "b"]))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["name"], job["tags"], job["dataset_id"]) == ("queued", "first", ["a", "b"], "builtin:digits")
    assert job["progress"] == {"epoch": 0, "epochs": 3}
    # the stored spec is explicit: data-dependent defaults were resolved
    assert job["spec"]["loss"] == "categorical_crossentropy"
    assert job["spec"]["model"]["output_activation"] == "softmax"

    [message] = api.published()
    assert (message.task_id, message.task, message.args) == (job["id"], TRAIN_TASK, [job["id"]])
    assert api.client.get(response.headers["location"]).json() == job


def test_the_row_is_committed_before_the_message_is_sent(make_api, settings_factory):
    seen = []

    class RecordingEnqueuer(Enqueuer):
        """Looks the job up through the store, in its own session, at the moment of publishing."""

        def enqueue(self, job_id: str) -> None:
            seen.append(api.store.get_job(job_id).status)
            super().enqueue(job_id)

    enqueuer = RecordingEnqueuer(celery_client(settings_factory()))
    try:
        api = make_api(enqueuer=enqueuer)
        assert api.submit(**job_body()).status_code == 202
    finally:
        enqueuer.close()
    assert seen == ["queued"]
    assert len(api.published()) == 1


def test_submit_on_an_uploaded_dataset(api):
    dataset = api.upload_npz("reg", **regression_arrays(rows=40)).json()
    response = api.submit(dataset={"id": dataset["id"]}, epochs=2)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["dataset_id"] == dataset["id"] and job["spec"]["loss"] == "mse"
    assert [m.task_id for m in api.published()] == [job["id"]]


def test_builtin_by_id(api):
    response = api.submit(dataset={"id": "builtin:iris"})
    assert response.status_code == 202, response.text
    assert response.json()["dataset_id"] == "builtin:iris"


def test_invalid_spec_422_names_each_bad_field(api):
    response = api.submit(
        dataset={"builtin": "digits", "validation_split": 1.5},
        model={"hidden_layers": [{"units": 0}]},
        optimizer={"name": "adagrad"},
        epochs=0,
        colour="blue",
    )
    assert response.status_code == 422
    locs = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert {("body", "dataset", "validation_split"), ("body", "model", "hidden_layers", 0, "units"),
            ("body", "epochs"), ("body", "colour")} <= locs
    assert any(loc[:2] == ("body", "optimizer") for loc in locs)
    assert_nothing_stored(api)


@pytest.mark.parametrize("body", [{"dataset": {}}, {"dataset": {"builtin": "xor", "id": "x"}}, {}, []])
def test_dataset_source_must_be_exactly_one(api, body):
    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert_nothing_stored(api)


def test_malformed_json_422(api):
    response = api.client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert_nothing_stored(api)


@pytest.mark.parametrize("dataset", [{"id": "f" * 32}, {"id": "builtin:mnist"}])
def test_unknown_dataset_404(api, dataset):
    response = api.submit(dataset=dataset)
    assert response.status_code == 404
    assert dataset["id"] in response.json()["detail"]
    assert_nothing_stored(api)


def test_unknown_builtin_name_is_a_422(api):
    response = api.submit(dataset={"builtin": "mnist"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "dataset", "builtin"]


MISMATCHES = [
    # softmax output on a regression target
    (job_body("sine", model={"output_activation": "softmax"}), ["body", "model", "output_activation"], "softmax"),
    # binary cross-entropy with 3 classes
    (job_body("iris", loss="binary_crossentropy"), ["body", "loss"], "binary_crossentropy"),
    # an accuracy monitor on regression
    (job_body("sine", early_stopping={"monitor": "val_accuracy", "patience": 2}),
     ["body", "early_stopping", "monitor"], "val_accuracy"),
    # a validation monitor without validation data
    (job_body("moons", dataset={"builtin": "moons", "validation_split": 0.0},
              lr_schedule={"name": "reduce_on_plateau", "monitor": "val_loss"}),
     ["body", "lr_schedule", "monitor"], "val_loss"),
    (job_body("digits", loss="mse"), ["body", "loss"], "mse"),
]


@pytest.mark.parametrize("body, loc, value", MISMATCHES, ids=[".".join(map(str, m[1][1:])) for m in MISMATCHES])
def test_spec_that_cannot_fit_its_dataset_422_in_the_validation_error_shape(api, body, loc, value):
    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert set(error) == {"type", "loc", "msg", "input"}
    assert (error["type"], error["loc"]) == ("spec_mismatch", loc)
    if value is not None:
        assert error["input"] == value
    assert error["msg"]
    assert_nothing_stored(api)


def test_mismatch_against_an_uploaded_regression_dataset(api):
    dataset = api.upload_npz("reg", **regression_arrays()).json()
    response = api.submit(dataset={"id": dataset["id"]}, loss="categorical_crossentropy")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "loss"]
    assert_nothing_stored(api)


def test_job_stays_stored_when_the_broker_is_down(make_api, settings_factory):
    # the row is the source of truth (issue 4's reconciler re-enqueues queued jobs); the API says so in its log
    dead = Enqueuer(celery_client(settings_factory(broker_url="redis://127.0.0.1:1/0")))
    try:
        api = make_api(enqueuer=dead)
        response = api.submit(**job_body())
    finally:
        dead.close()
    assert response.status_code == 202
    assert api.client.get(response.headers["location"]).json()["status"] == "queued"


def test_oversized_json_body_413(api):
    response = api.submit(**job_body(name="x" * 2_000_000))
    assert response.status_code == 413
    assert_nothing_stored(api)


# ---------------------------------------------------------------- reads


def test_get_unknown_job_404(api):
    for path in ("", "/history", "/checkpoints", "/model"):
        response = api.client.get(f"/v1/jobs/nope{path}")
        assert response.status_code == 404, path
        assert response.json() == {"detail": "job 'nope' not found"}
    assert api.client.post("/v1/jobs/nope/cancel").status_code == 404


def submit(api, **spec) -> dict:
    response = api.submit(**spec)
    assert response.status_code == 202, response.text
    return response.json()


def run_epochs(api, job_id: str, epochs: list[EpochMetrics], *, checkpoints: bool = False) -> None:
    """Do what a worker does, through the store's worker-side API."""
    assert api.store.claim_job(job_id, WORKER, lease_seconds=60) is not None
    for metrics in epochs:
        checkpoint = store_checkpoint(api.store, job_id, metrics.epoch) if checkpoints else None
        api.store.record_epoch(job_id, WORKER, metrics, is_best=True, checkpoint=checkpoint, lease_seconds=60)


def test_list_filters(api):
    a = submit(api, **job_body("xor", name="alpha", tags=["red"]))
    b = submit(api, **job_body("iris", name="beta", tags=["red", "blue"]))
    c = submit(api, **job_body("iris", name="gamma"))
    api.client.post(f"/v1/jobs/{c['id']}/cancel")
    assert job_ids(api) == [c["id"], b["id"], a["id"]]  # newest first
    assert job_ids(api, order="asc") == [a["id"], b["id"], c["id"]]
    assert job_ids(api, tag="red") == [b["id"], a["id"]]
    assert job_ids(api, tag="blue") == [b["id"]]
    assert job_ids(api, name="alpha") == [a["id"]]
    assert job_ids(api, dataset="builtin:iris") == [c["id"], b["id"]]
    assert job_ids(api, status="cancelled") == [c["id"]]
    assert job_ids(api, status="queued", dataset="builtin:iris") == [b["id"]]


def test_list_pagination_with_cursor(api):
    ids = [submit(api, **job_body(name=f"j{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/jobs", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_list_ordered_by_best_metrics(api):
    jobs = [submit(api, **job_body("moons", name=f"m{i}"))["id"] for i in range(3)]
    for job_id, loss in zip(jobs, (0.5, 0.2, 0.9)):
        run_epochs(api, job_id, [epoch_metrics(1, val_loss=loss, val_accuracy=1 - loss)])
    assert job_ids(api, order_by="best_val_loss", order="asc") == [jobs[1], jobs[0], jobs[2]]
    assert job_ids(api, order_by="best_val_accuracy", order="desc") == [jobs[1], jobs[0], jobs[2]]


@pytest.mark.parametrize("params, loc", [
    ({"status": "sleeping"}, ["query", "status"]),
    ({"order_by": "name"}, ["query", "order_by"]),
    ({"order": "up"}, ["query", "order"]),
    ({"limit": 0}, ["query", "limit"]),
    ({"limit": 501}, ["query", "limit"]),
    ({"cursor": "garbage"}, ["query", "cursor"]),
])
def test_list_bad_query_422(api, params, loc):
    response = api.client.get("/v1/jobs", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_history_json_and_csv(api):
    job = submit(api, **job_body("sine", epochs=3))
    metrics = [EpochMetrics(epoch=1, train_loss=0.5, val_loss=0.6, val_r2=0.1, val_mae=0.4, lr=0.001, seconds=0.25),
               EpochMetrics(epoch=2, train_loss=0.25, val_loss=0.3, val_r2=0.5, val_mae=0.2, lr=0.0005, seconds=0.5)]
    run_epochs(api, job["id"], metrics)

    history = api.client.get(f"/v1/jobs/{job['id']}/history").json()
    assert history["job_id"] == job["id"]
    assert [EpochMetrics(**row) for row in history["epochs"]] == metrics

    response = api.client.get(f"/v1/jobs/{job['id']}/history", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_r2", "val_mae",
                       "lr", "seconds", "fold", "fold_epoch"]
    assert rows[1] == ["1", "0.5", "0.6", "", "", "0.1", "0.4", "0.001", "0.25", "", ""]  # no folds: empty
    assert len(rows) == 3

    job = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert (job["status"], job["progress"], job["latest_metrics"]["epoch"]) == ("running", {"epoch": 2, "epochs": 3}, 2)
    assert api.client.get(f"/v1/jobs/{job['id']}/history", params={"format": "xml"}).status_code == 422


def test_cancel_queued_running_and_finished_jobs(api):
    queued = submit(api, **job_body())
    cancelled = api.client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 202
    assert (cancelled.json()["status"], cancelled.json()["stop_reason"]) == ("cancelled", "cancelled")

    running = submit(api, **job_body())
    run_epochs(api, running["id"], [epoch_metrics(1)])
    response = api.client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    assert api.store.cancel_requested(running["id"])

    again = api.client.post(f"/v1/jobs/{queued['id']}/cancel")  # terminal: unchanged
    assert again.status_code == 202 and again.json() == cancelled.json()


def test_checkpoints_and_model_download(api, tmp_path):
    job = submit(api, **job_body("xor", epochs=2))
    assert api.client.get(f"/v1/jobs/{job['id']}/model").status_code == 409  # no model yet
    run_epochs(api, job["id"], [epoch_metrics(1), epoch_metrics(2)], checkpoints=True)

    checkpoints = api.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
    assert [c["epoch"] for c in checkpoints] == [1, 2]
    first = read_object(api.store, api.store.checkpoint_key(job["id"], 1))
    assert checkpoints[0]["sha256"] == hashlib.sha256(first).hexdigest()
    assert checkpoints[0]["size_bytes"] == len(first)

    buffer = io.BytesIO()
    np.savez(buffer, **{"layers.0.weight": np.ones((2, 1), np.float32), "meta": np.array('{"v": 1}')})
    content = buffer.getvalue()
    sha256 = hashlib.sha256(content).hexdigest()
    model = store_model(api.store, job["id"], content)
    api.store.finish_job(job["id"], WORKER, status="succeeded", stop_reason="completed", best_epoch=2, model=model)

    response = api.client.get(f"/v1/jobs/{job['id']}/model")
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-model-sha256"] == sha256
    assert response.headers["etag"] == f'"{sha256}"'
    with np.load(io.BytesIO(response.content), allow_pickle=False) as model:
        assert model["layers.0.weight"].shape == (2, 1)

    cached = api.client.get(f"/v1/jobs/{job['id']}/model", headers={"If-None-Match": f'"{sha256}"'})
    assert cached.status_code == 304 and cached.content == b""

    done = api.client.get(f"/v1/jobs/{job['id']}").json()
    assert (done["status"], done["stop_reason"], done["best_epoch"]) == ("succeeded", "completed", 2)


def test_openapi_documents_every_endpoint_and_the_spec_example(api):
    schema = api.client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/healthz", "/readyz", "/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/jobs", "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/history", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/model",
        "/v1/jobs/{job_id}/checkpoints", "/v1/jobs/{job_id}/predict", "/v1/jobs/{job_id}/events", "/v1/limits",
        "/v1/sweeps", "/v1/sweeps/{sweep_id}", "/v1/sweeps/{sweep_id}/cancel"}
    assert schema["components"]["schemas"]["JobSpec"]["examples"][0]["dataset"]["builtin"] == "digits"
