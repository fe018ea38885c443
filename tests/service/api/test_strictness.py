"""What the fuzzer found, pinned: the API answers exactly what its schema declares."""
from __future__ import annotations

import pytest

from tests.utils.api import job_body


@pytest.mark.parametrize("path, allowed", [("/v1/jobs", "GET, POST"), ("/v1/datasets", "GET, POST"),
                                           ("/v1/jobs/x/cancel", "POST"), ("/v1/jobs/x", "GET")])
def test_405_lists_every_method_of_the_path(api, path, allowed):
    response = api.client.request("DELETE", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize("query, loc, kind", [
    ("stauts=queued", ["query", "stauts"], "unknown_parameter"),
    ("status=queued&status=failed", ["query", "status"], "multiple_values"),
])
def test_unknown_or_repeated_query_parameters_422(api, query, loc, kind):
    response = api.client.get(f"/v1/jobs?{query}")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (loc, kind)
    assert api.client.get("/v1/jobs?status=queued").status_code == 200


@pytest.mark.parametrize("body, loc", [
    (job_body(checkpoint={"keep_best": 0}), ["body", "checkpoint", "keep_best"]),
    (job_body(early_stopping={"start_from_epoch": False}), ["body", "early_stopping", "start_from_epoch"]),
    (job_body(epochs="5"), ["body", "epochs"]),
    (job_body(dataset={"builtin": "xor", "standardize": "yes"}), ["body", "dataset", "standardize"]),
], ids=["int-for-bool", "bool-for-int", "string-for-int", "string-for-bool"])
def test_values_of_another_type_are_refused_not_coerced(api, body, loc):
    response = api.client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert api.client.post("/v1/jobs", json=job_body(l2=1)).status_code == 202  # an integer is a number


def test_an_unreadable_json_body_is_a_declared_400(api):
    response = api.client.post("/v1/jobs", content=b'{"name": "\xff"}', headers={"content-type": "application/json"})
    assert response.status_code == 400
    declared = api.client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    assert "400" in declared


def test_upload_form_fields_are_optional_strings_not_nullable(api):
    schema = api.client.get("/openapi.json").json()["components"]["schemas"]
    form = next(value for name, value in schema.items() if name.startswith("Body_upload_dataset"))
    assert form["required"] == ["file"]
    assert {name: "anyOf" in prop for name, prop in form["properties"].items()} == {
        "file": False, "target": False, "name": False, "task": False}
