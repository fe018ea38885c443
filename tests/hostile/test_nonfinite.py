"""Non-finite numbers (issue 11, defect 4): every float of the job spec is finite. JSON's `NaN`,
`Infinity`, `-Infinity` (which Python's json reads), a number that overflows to infinity (1e400)
and strings spelling them answer 422 naming the field; nothing is stored; stored JSON is standard."""
from __future__ import annotations

import json
import typing
from types import UnionType

import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from service.specs import BUILTIN_DATASETS, DatasetSpec, JobSpec, LayerSpec, resolve_spec
from tests.service.api.test_portable import trained_job
from tests.utils.api import job_body

# the fields a model needs before its float fields can be tried (a new required field fails
# `fragment` below, so this list cannot silently fall behind the contract)
REQUIRED = {JobSpec: job_body("xor"), DatasetSpec: {"builtin": "xor"}, LayerSpec: {"units": 4}}


def fragment(model: type[BaseModel]) -> dict:
    body = dict(REQUIRED.get(model, {}))
    name = model.model_fields.get("name")
    if name is not None and typing.get_origin(name.annotation) is typing.Literal:
        body["name"] = typing.get_args(name.annotation)[0]  # a member of a discriminated union
    missing = [key for key, field in model.model_fields.items() if field.is_required() and key not in body]
    assert not missing, f"add {model.__name__}'s required fields {missing} to REQUIRED"
    return body


def members(annotation) -> list:
    """The types an annotation allows: X | None, Union[...], Annotated[Union[...], ...]."""
    if typing.get_origin(annotation) is typing.Annotated:
        return members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, UnionType):
        return [t for arg in typing.get_args(annotation) for t in members(arg)]
    return [annotation]


def float_locations(model: type[BaseModel]) -> list[tuple[tuple, tuple, dict]]:
    """(path of a float field, the `loc` a 422 names it by, the body of `model` around it) for
    every float the model holds, through nested models, lists of models and each member of a
    union (whose loc Pydantic gives with the member's tag: optimizer.adam.beta1)."""
    found = []
    for key, field in model.model_fields.items():
        kinds = members(field.annotation)
        tagged = sum(isinstance(kind, type) and issubclass(kind, BaseModel) for kind in kinds) > 1
        for kind in kinds:
            if kind is float:
                found.append(((key,), (key,), fragment(model)))
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                tag = (fragment(kind)["name"],) if tagged else ()
                for path, loc, inner in float_locations(kind):
                    found.append(((key, *path), (key, *tag, *loc), {**fragment(model), key: inner}))
            elif typing.get_origin(kind) is list:
                [item] = typing.get_args(kind)
                if isinstance(item, type) and issubclass(item, BaseModel):
                    for path, loc, inner in float_locations(item):
                        # the last of three items: arrays are searched, not only their head
                        items = [fragment(item), fragment(item), inner]
                        found.append(((key, 2, *path), (key, 2, *loc), {**fragment(model), key: items}))
    return found


LOCATIONS = float_locations(JobSpec)
TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E999"]  # raw JSON numbers Python reads
STRINGS = ['"NaN"', '"Infinity"', '"inf"', '"-inf"', '"1e400"']


def test_every_float_of_the_contract_is_enumerated():
    paths = {".".join(str(part) for part in loc) for _, loc, _ in LOCATIONS}
    # the ones the issue found, and one in each kind of place: top level, nested, array, union member
    assert {"clip_norm", "l2", "early_stopping.min_delta", "early_stopping.baseline",
            "lr_schedule.cosine.min_lr", "lr_schedule.reduce_on_plateau.min_lr", "dataset.validation_split",
            "model.hidden_layers.2.dropout", "optimizer.sgd.learning_rate", "optimizer.adamw.beta2",
            "lr_schedule.reduce_on_plateau.factor"} <= paths
    assert len(LOCATIONS) >= 20


def with_raw(body: dict, path: tuple, raw: str) -> bytes:
    """`body` as JSON with the value at `path` replaced by the raw text `raw`."""
    marker = "__VALUE_UNDER_TEST__"
    target = body = json.loads(json.dumps(body))
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = marker
    return json.dumps(body).replace(f'"{marker}"', raw).encode()


def job_count(api) -> int:
    return len(api.client.get("/v1/jobs", params={"limit": 500}).json()["items"])


def post_raw(api, url: str, raw: bytes):
    return api.client.post(url, content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path, loc, body", LOCATIONS, ids=[".".join(map(str, loc)) for _, loc, _ in LOCATIONS])
def test_a_non_finite_number_in_any_float_field_answers_422_naming_it(api, path, loc, body):
    assert post_raw(api, "/v1/jobs", json.dumps(body).encode()).status_code == 202  # the body is valid as is
    before = job_count(api)
    for raw in TOKENS + STRINGS:
        response = post_raw(api, "/v1/jobs", with_raw(body, path, raw))
        assert response.status_code == 422, (raw, response.text)
        errors = response.json()["detail"]
        assert [error["loc"] for error in errors] == [["body", *loc]], (raw, errors)
        [error] = errors
        if raw in TOKENS:
            assert error["type"] == "finite_number" and error["msg"] == "Input should be a finite number"
            assert error["input"] in ("NaN", "Infinity", "-Infinity")  # echoed as the token, in standard JSON
        else:
            assert error["type"] == "float_type" and error["input"] == json.loads(raw)
    assert job_count(api) == before


def test_several_non_finite_numbers_are_all_named(api):
    raw = (b'{"dataset": {"builtin": "xor", "validation_split": NaN}, "l2": Infinity, "clip_norm": -Infinity,'
           b' "model": {"hidden_layers": [{"units": 2}, {"units": 2, "dropout": 1e400}]}}')
    response = post_raw(api, "/v1/jobs", raw)
    assert response.status_code == 422, response.text
    assert sorted(tuple(error["loc"]) for error in response.json()["detail"]) == sorted([
        ("body", "dataset", "validation_split"), ("body", "l2"), ("body", "clip_norm"),
        ("body", "model", "hidden_layers", 1, "dropout")])
    assert job_count(api) == 0


@pytest.mark.parametrize("raw", [b'{"inputs": [[NaN, 1, 2, 3]]}', b'{"inputs": [[1, 2, 3, Infinity]]}',
                                 b'{"inputs": [[1, 2], [3, -Infinity]]}', b'{"inputs": [[1e400, 0]]}',
                                 b'{"inputs": [[0, -1E999]]}'])
def test_predict_refuses_non_standard_json_numbers(api, raw):
    # predict reads its body with orjson (strict JSON): the position of the bad token is named
    response = post_raw(api, f"/v1/jobs/{'0' * 32}/predict", raw)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid" and isinstance(error["loc"][1], int)


def test_predict_names_the_row_and_column_of_a_string_or_overflowing_number(api):
    job = trained_job(api, **job_body("xor", epochs=1, model={"hidden_layers": [{"units": 2}]}))
    for raw, kind in [('"NaN"', "float_type"), ('"Infinity"', "float_type"), ('"1e400"', "float_type"),
                      ("1e39", "finite_number"), ("-3.5e38", "finite_number")]:  # beyond float32
        response = post_raw(api, f"/v1/jobs/{job['id']}/predict", f'{{"inputs": [[0.5, 1], [0.5, {raw}]]}}'.encode())
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert (error["type"], error["loc"]) == (kind, ["body", "inputs", 1, 1]), raw


def test_stored_specs_and_summaries_are_standard_json(api):
    body = job_body("xor", clip_norm=1e308, l2=5e-324, early_stopping={"baseline": -1.7976931348623157e308})
    assert api.submit(**body).status_code == 202
    with api.store.session_scope() as session:
        stored = session.execute(text("SELECT spec FROM jobs")).scalar_one()
    raw = stored if isinstance(stored, str) else json.dumps(stored)

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token} stored")
    spec = json.loads(raw, parse_constant=refuse)
    # PostgreSQL's jsonb gives 1e308 back as 1000...0: the same number
    stored_values = (spec["clip_norm"], spec["l2"], spec["early_stopping"]["baseline"])
    assert tuple(map(float, stored_values)) == (1e308, 5e-324, -1.7976931348623157e308)
    job = api.client.get("/v1/jobs").json()["items"][0]
    assert (job["spec"]["clip_norm"], job["spec"]["early_stopping"]["baseline"]) == (1e308, -1.7976931348623157e308)


def test_the_database_refuses_to_store_a_non_finite_json_value(api):
    # the last line of defence: a NaN that got past validation is an error, not a silent null
    resolved = resolve_spec(JobSpec.model_validate(job_body("xor")), BUILTIN_DATASETS["xor"])
    spec = resolved.model_copy(update={"clip_norm": float("nan")})
    with pytest.raises((ValueError, StatementError), match="not JSON compliant"):  # SQLAlchemy may wrap it
        api.store.create_job(owner=None, spec=spec, dataset_id="builtin:xor", max_queued=100)
    assert job_count(api) == 0
