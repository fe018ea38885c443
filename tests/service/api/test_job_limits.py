"""Caps as a contract: declared in the OpenAPI schema, set in Settings, enforced at submission.

Over a cap: 422 naming the field (429 for one queued job too many), no job row, no message."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings
from service.specs import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_HIDDEN_LAYERS, MAX_PARAMETERS, MAX_TRIALS, MAX_UNITS
from tests.utils.api import job_body


def stored_job_ids(api) -> list[str]:
    return [job.id for job in api.store.list_jobs(limit=1000).items]


def assert_nothing_stored(api) -> None:
    assert stored_job_ids(api) == []
    assert api.published() == []


def test_the_schema_declares_the_caps_and_settings_default_to_them(api):
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    spec = schemas.get("JobSpec") or schemas["JobSpec-Input"]
    layer = schemas.get("LayerSpec") or schemas["LayerSpec-Input"]
    model = schemas.get("ModelSpec") or schemas["ModelSpec-Input"]
    declared = {
        "max_epochs": spec["properties"]["epochs"]["maximum"],
        "max_batch_size": spec["properties"]["batch_size"]["maximum"],
        "max_units": layer["properties"]["units"]["maximum"],
        "max_hidden_layers": model["properties"]["hidden_layers"]["maxItems"],
    }
    assert declared == {"max_epochs": MAX_EPOCHS, "max_batch_size": MAX_BATCH_SIZE, "max_units": MAX_UNITS,
                        "max_hidden_layers": MAX_HIDDEN_LAYERS}
    defaults = Settings(_env_file=None)
    assert {name: getattr(defaults, name) for name in declared} == declared
    assert defaults.max_parameters == MAX_PARAMETERS
    assert "MAX_PARAMETERS" in model["properties"]["hidden_layers"]["description"]


def test_caps_come_from_the_environment_and_may_only_tighten(monkeypatch):
    monkeypatch.setenv("MAX_EPOCHS", "50")
    monkeypatch.setenv("MAX_QUEUED_JOBS_PER_OWNER", "7")
    settings = Settings(_env_file=None)
    assert (settings.max_epochs, settings.job_limits.max_epochs, settings.max_queued_jobs_per_owner) == (50, 50, 7)
    with pytest.raises(ValidationError, match="max_units"):
        Settings(_env_file=None, max_units=MAX_UNITS + 1)


def test_limits_endpoint_reports_the_live_caps(make_api):
    api = make_api(max_epochs=40, max_upload_bytes=5000, max_queued_jobs_per_owner=3, max_folds=4)
    limits = api.client.get("/v1/limits").json()
    assert limits == {"max_epochs": 40, "max_hidden_layers": MAX_HIDDEN_LAYERS, "max_units": MAX_UNITS,
                      "max_parameters": MAX_PARAMETERS, "max_batch_size": MAX_BATCH_SIZE,
                      "max_upload_bytes": 5000, "max_dataset_rows": 2_000_000, "max_dataset_bytes": 200 * 1024 * 1024,
                      "max_queued_jobs_per_owner": 3, "max_predict_rows": 10_000, "max_folds": 4,
                      "max_trials_per_sweep": MAX_TRIALS,
                      "max_concurrent_trials_per_owner": 8}


TIGHT = dict(max_epochs=10, max_batch_size=64, max_hidden_layers=2, max_units=32, max_parameters=2000)
OVER_A_DEPLOYMENT_CAP = [
    (job_body(epochs=11), ["body", "epochs"], 11, "11 epochs exceed the cap of 10 (MAX_EPOCHS)"),
    (job_body(batch_size=65), ["body", "batch_size"], 65, "exceeds the cap of 64 (MAX_BATCH_SIZE)"),
    (job_body(model={"hidden_layers": [{"units": 4}] * 3}), ["body", "model", "hidden_layers"], None,
     "3 hidden layers exceed the cap of 2"),
    (job_body(model={"hidden_layers": [{"units": 8}, {"units": 33}]}), ["body", "model", "hidden_layers", 1, "units"],
     33, "33 units exceed the cap of 32 (MAX_UNITS)"),
    # digits: 64 inputs x 32 + 32 x 10 outputs (+ biases) = 2410 parameters
    (job_body("digits", model={"hidden_layers": [{"units": 32}]}), ["body", "model", "hidden_layers"], None,
     "2410 parameters exceed the cap of 2000 (MAX_PARAMETERS)"),
]


@pytest.mark.parametrize("body, loc, value, message", OVER_A_DEPLOYMENT_CAP,
                         ids=[".".join(map(str, case[1][1:])) for case in OVER_A_DEPLOYMENT_CAP])
def test_over_a_deployment_cap_422_names_the_field_and_stores_nothing(make_api, body, loc, value, message):
    api = make_api(**TIGHT)
    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("limit_exceeded", loc)
    assert message in error["msg"]
    if value is not None:
        assert error["input"] == value
    assert_nothing_stored(api)


def test_at_the_deployment_caps_is_accepted(make_api):
    api = make_api(**TIGHT)
    body = job_body("iris", epochs=10, batch_size=64, model={"hidden_layers": [{"units": 32}, {"units": 32}]})
    response = api.client.post("/v1/jobs", json=body)  # 4*32+32 + 32*32+32 + 32*3+3 = 1315 parameters
    assert response.status_code == 202, response.text
    assert [message.task_id for message in api.published()] == [response.json()["id"]]


@pytest.mark.parametrize("body, loc", [
    (job_body(epochs=MAX_EPOCHS + 1), ["body", "epochs"]),
    (job_body(batch_size=MAX_BATCH_SIZE + 1), ["body", "batch_size"]),
    (job_body(model={"hidden_layers": [{"units": 1}] * (MAX_HIDDEN_LAYERS + 1)}), ["body", "model", "hidden_layers"]),
    (job_body(model={"hidden_layers": [{"units": MAX_UNITS + 1}]}), ["body", "model", "hidden_layers", 0, "units"]),
], ids=["epochs", "batch_size", "hidden_layers", "units"])
def test_over_the_schema_cap_422_from_validation(api, body, loc):
    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert_nothing_stored(api)


def test_queued_jobs_per_owner_429_until_one_leaves_the_queue(make_api):
    api = make_api(max_queued_jobs_per_owner=2)
    accepted = [api.submit(**job_body()) for _ in range(2)]
    assert [response.status_code for response in accepted] == [202, 202]
    refused = api.submit(**job_body())
    assert refused.status_code == 429, refused.text
    assert "already has 2 queued jobs" in refused.json()["detail"]
    ids = [response.json()["id"] for response in accepted]
    assert sorted(stored_job_ids(api)) == sorted(ids)
    assert [message.task_id for message in api.published()] == ids

    # a cancelled job no longer counts
    assert api.client.post(f"/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"
    again = api.submit(**job_body())
    assert again.status_code == 202
    assert len(stored_job_ids(api)) == 3
