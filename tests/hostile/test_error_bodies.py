"""Error responses that crashed (issue 11, defect 5): a refused request whose echoed input holds a
NaN, a lone surrogate, a NUL or deep nesting still gets its 422 (or 400), in standard JSON and
UTF-8, naming the field; text that cannot be stored (NUL, lone surrogates) is refused wherever it
comes in: JSON bodies, form fields, file names, query and path parameters. Nothing stored changes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.utils.api import job_body

REPLACEMENT = "\ufffd"


def standard_json(response) -> object:
    """The body, which must be UTF-8 standard JSON (no NaN/Infinity tokens)."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token} in an error body")
    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def stored(api) -> tuple[int, int]:
    jobs = api.client.get("/v1/jobs", params={"limit": 500}).json()["items"]
    datasets = [d for d in api.client.get("/v1/datasets").json() if d["source"] == "upload"]
    return len(jobs), len(datasets)


def post_json(api, url: str, raw: str | bytes):
    return api.client.post(url, content=raw.encode() if isinstance(raw, str) else raw,
                           headers={"Content-Type": "application/json"})


XOR = '"dataset": {"builtin": "xor"}'
JOB_BODIES = [  # (label, raw JSON, the loc named, the echoed input once encoded)
    ("NaN for a string", f'{{{XOR}, "name": NaN}}', ["body", "name"], "NaN"),
    ("Infinity in a string list", f'{{{XOR}, "tags": [-Infinity]}}', ["body", "tags", 0], "-Infinity"),
    ("NaN for an integer", f'{{{XOR}, "epochs": NaN}}', ["body", "epochs"], "NaN"),
    ("NaN for a choice", '{"dataset": {"builtin": NaN}}', ["body", "dataset", "builtin"], "NaN"),
    ("NaN under an unknown key", f'{{{XOR}, "surprise": [NaN, Infinity]}}', ["body", "surprise"],
     ["NaN", "Infinity"]),
    ("NaN for a model", f'{{{XOR}, "early_stopping": NaN}}', ["body", "early_stopping"], "NaN"),
    ("lone high surrogate in the name", f'{{{XOR}, "name": "a\\ud800b"}}', ["body", "name"], f"a{REPLACEMENT}b"),
    ("lone low surrogate in a tag", f'{{{XOR}, "tags": ["ok", "\\udfff"]}}', ["body", "tags", 1], REPLACEMENT),
    ("lone surrogate as a dataset id", '{"dataset": {"id": "\\udbff"}}', ["body", "dataset", "id"], REPLACEMENT),
    ("lone surrogate for a choice", '{"dataset": {"builtin": "\\ud800"}}', ["body", "dataset", "builtin"],
     REPLACEMENT),
    # Pydantic names no field for a key it cannot read as text: string_unicode at the body
    ("lone surrogate as an unknown key", f'{{{XOR}, "\\ud800": 1}}', ["body"], REPLACEMENT),
    ("surrogate sent raw, not escaped", f'{{{XOR}, "name": "\udcff"}}'.encode("utf-8", "surrogatepass"),
     ["body", "name"], REPLACEMENT),
    ("NUL in the name", f'{{{XOR}, "name": "x\\u0000"}}', ["body", "name"], "x\u0000"),
    ("NUL in a tag", f'{{{XOR}, "tags": ["\\u0000"]}}', ["body", "tags", 0], "\u0000"),
    ("NUL in a dataset id", '{"dataset": {"id": "abc\\u0000"}}', ["body", "dataset", "id"], "abc\u0000"),
]


@pytest.mark.parametrize("label, raw, loc, echoed", JOB_BODIES, ids=[case[0] for case in JOB_BODIES])
def test_refused_job_specs_answer_422_whatever_they_echo(api, label, raw, loc, echoed):
    before = stored(api)
    response = post_json(api, "/v1/jobs", raw)
    assert response.status_code == 422, response.text
    errors = standard_json(response)["detail"]
    [error] = [e for e in errors if e["loc"] == loc]
    assert error["input"] == echoed
    if error["type"] == "text_unstorable":
        assert "NUL or lone surrogates" in error["msg"] and "U+" in error["msg"]
    assert stored(api) == before


def test_a_deeply_nested_value_is_echoed_cut_short(api):
    depth = 500  # within what the JSON parser reads, far beyond what an error body repeats
    response = post_json(api, "/v1/jobs", f'{{{XOR}, "name": {"[" * depth}{"]" * depth}}}')
    assert response.status_code == 422, response.text
    [error] = standard_json(response)["detail"]
    assert error["loc"] == ["body", "name"]
    assert "…" in json.dumps(error["input"], ensure_ascii=False)
    assert len(response.content) < 1000
    assert stored(api) == (0, 0)


@pytest.mark.parametrize("raw", [
    b'{"dataset": {"builtin": "xor"}, "name": "\xff"}',  # not UTF-8
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any JSON parser recurses
    b'{"dataset": ' * 50_000 + b"1" + b"}" * 50_000,
])
def test_bodies_that_are_not_readable_json_answer_400(api, raw):
    response = post_json(api, "/v1/jobs", raw)
    assert response.status_code == 400, response.text
    assert standard_json(response)["detail"]
    assert stored(api) == (0, 0)


@pytest.mark.parametrize("raw, status", [
    ('{"inputs": [[1, 2]], "\\ud800": NaN}', 422),  # orjson refuses both: json_invalid at a position
    ('{"inputs": "\\ud800"}', 422),
    ('{"inputs": [[NaN]]}', 422),
    (b'{"inputs": [[1]], "x": "\xff"}', 400),
    ("[" * 100_000, 422),
])
def test_predict_error_bodies_encode(api, raw, status):
    response = post_json(api, f"/v1/jobs/{'0' * 32}/predict", raw)
    assert response.status_code == status, response.text
    assert standard_json(response)["detail"]


def multipart(fields: dict[str, str], filename: str) -> tuple[bytes, str]:
    """A multipart body written by hand: HTTP clients percent-encode a NUL in a file name."""
    boundary = "hostile-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
             for key, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: text/csv\r\n\r\nx,label\n1,a\n2,b\n\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("form, filename, loc", [
    ({"name": "a\x00b"}, "table.csv", ["body", "name"]),
    ({"target": "label\x00"}, "table.csv", ["body", "target"]),
    ({"task": "\x00"}, "table.csv", ["body", "task"]),
    ({}, "ta\x00ble.csv", None),  # the default name comes from the file name: a 400 naming `file`
])
def test_form_fields_and_file_names_holding_nul_are_refused(api, form, filename, loc):
    content, content_type = multipart({"target": "label", **form}, filename)
    response = api.client.post("/v1/datasets", content=content, headers={"Content-Type": content_type})
    body = standard_json(response)
    if loc is None:
        assert response.status_code == 400, response.text
        assert body["field"] == "file" and "NUL" in body["detail"]
    else:
        assert response.status_code == 422, response.text
        assert [error["loc"] for error in body["detail"]] == [loc]
    assert stored(api) == (0, 0)


@pytest.mark.parametrize("url, loc", [
    ("/v1/jobs?name=%00", ["query", "name"]),
    ("/v1/jobs?tag=a%00b", ["query", "tag"]),
    ("/v1/jobs?dataset=builtin:xor%00", ["query", "dataset"]),
    ("/v1/jobs?status=%00", ["query", "status"]),
    ("/v1/jobs?cursor=e30%00", ["query", "cursor"]),
    ("/v1/jobs/%00", ["path", "job_id"]),
    (f"/v1/jobs/{'0' * 31}%00/history", ["path", "job_id"]),
    ("/v1/jobs/%00/checkpoints", ["path", "job_id"]),
    ("/v1/datasets/%00", ["path", "dataset_id"]),
])
def test_query_and_path_parameters_holding_nul_answer_422(api, url, loc):
    assert api.submit(**job_body("xor")).status_code == 202
    before = stored(api)
    response = api.client.get(url)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in standard_json(response)["detail"]]
    assert stored(api) == before


@pytest.mark.parametrize("url", [
    "/v1/jobs?limit=NaN", "/v1/jobs?limit=1e400", "/v1/jobs?order=%ED%A0%80", "/v1/jobs?st%00atus=queued",
    f"/v1/jobs/{'0' * 32}/history?points=Infinity",
])
def test_query_parameters_of_the_wrong_kind_echo_in_standard_json(api, url):
    response = api.client.get(url)
    assert response.status_code == 422, response.text
    assert standard_json(response)["detail"][0]["loc"][0] == "query"


def test_a_cancel_on_a_nul_id_changes_nothing(api):
    job = api.submit(**job_body("xor")).json()
    response = api.client.post(f"/v1/jobs/{job['id']}%00/cancel")
    assert response.status_code == 422, response.text
    assert api.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"


@pytest.mark.parametrize("upload", ["csv", "npz"])
def test_class_labels_holding_nul_are_refused(api, upload):
    if upload == "csv":
        response = api.upload_csv("x,label\n1,a\x00b\n2,b\n3,a\x00b\n4,b\n")
    else:
        response = api.upload_npz(X=np.zeros((4, 2), np.float32), y=np.array(["a\x00b", "c", "a\x00b", "c"]))
    assert response.status_code == 400, response.text
    assert "cannot be stored" in standard_json(response)["detail"]
    assert stored(api) == (0, 0)
