"""Smaller HTTP defects (issue 11, defect 8): HEAD wherever GET is served; multipart names,
file names and values that are not UTF-8 refused (400, naming the part); a CSV of blank lines
says so; two Authorization headers refused (400). Nothing stored changes on a refusal."""
from __future__ import annotations

import re

import pytest

from service.store import ApiKeys
from tests.utils.api import job_body
from tests.utils.uploads import classification_arrays, npz_bytes

BOUNDARY = "hostile-boundary"


def stored(api):
    return api.client.get("/v1/datasets").json(), api.stored_dataset_files()


# ---------------------------------------------------------------- HEAD


def get_paths(api, job_id: str, dataset_id: str) -> list[str]:
    """Every GET path of the OpenAPI schema, its parameters filled with a real job and dataset."""
    schema = api.client.get("/openapi.json").json()
    values = {"job_id": job_id, "dataset_id": dataset_id}  # any other id: one that does not exist (404 both)
    paths = [re.sub(r"\{(\w+)\}", lambda match: values.get(match[1], "0" * 32), path)
             for path, operations in schema["paths"].items() if "get" in operations]
    return [*paths, "/", "/compare", f"/jobs/{job_id}", "/static/style.css"]  # the dashboard, not in the schema


def test_head_answers_wherever_get_does_with_its_headers_and_no_body(api):
    dataset_id = api.upload_npz(**classification_arrays()).json()["id"]
    job_id = api.submit(**job_body("iris")).json()["id"]
    paths = get_paths(api, job_id, dataset_id)
    assert len(paths) >= 14
    for path in paths:
        head = api.client.head(path)
        assert head.status_code != 405, path
        assert head.content == b"", path
        if path.endswith("/events"):  # a live stream: GET would not end while the job is queued
            assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
            continue
        get = api.client.get(path)
        assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
        for name in ("content-type", "content-length", "etag", "x-model-sha256"):
            assert head.headers.get(name) == get.headers.get(name), (path, name)


def test_head_on_a_route_without_get_is_still_405(api):
    response = api.client.head("/v1/jobs/0123/cancel")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


# ---------------------------------------------------------------- multipart bytes


def multipart_body(parts: list[tuple[bytes, bytes]]) -> bytes:
    """(Content-Disposition parameters, content) per part, raw bytes."""
    body = b""
    for disposition, content in parts:
        body += (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n"
                 + content + b"\r\n")
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


NPZ = npz_bytes(**classification_arrays())
NOT_UTF8 = [  # (label, parts, what the message names)
    ("file name", [(b'name="file"; filename="d\xe9.npz"', NPZ)], "file name of part 'file'"),
    ("file name, overlong encoding", [(b'name="file"; filename="\xc0\xaed.npz"', NPZ)], "file name"),
    ("file name, lone surrogate", [(b'name="file"; filename="\xed\xa0\x80.npz"', NPZ)], "file name"),
    ("field name", [(b'name="file"; filename="d.npz"', NPZ), (b'name="na\xffme"', b"x")], "a part's name"),
    ("the file part's name", [(b'name="fil\xe9"; filename="d.npz"', NPZ)], "a part's name"),
    ("name value", [(b'name="file"; filename="d.npz"', NPZ), (b'name="name"', b"caf\xe9")], "field 'name'"),
    ("task value", [(b'name="file"; filename="d.npz"', NPZ), (b'name="task"', b"\xff\xfe")], "field 'task'"),
    ("target value", [(b'name="file"; filename="d.csv"', b"a,label\n1,0\n2,1\n"), (b'name="target"', b"lab\x80el")],
     "field 'target'"),
]


@pytest.mark.parametrize("label, parts, named", NOT_UTF8, ids=[label for label, _, _ in NOT_UTF8])
def test_multipart_bytes_that_are_not_utf8_are_refused(api, label, parts, named):
    before = stored(api)
    response = api.client.post("/v1/datasets", content=multipart_body(parts),
                               headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "not UTF-8" in detail and named in detail, detail
    assert stored(api) == before


def test_utf8_names_and_values_are_kept_exactly(api):
    response = api.client.post("/v1/datasets", content=multipart_body([
        ('name="file"; filename="données.npz"'.encode(), NPZ), (b'name="name"', "café ☕".encode())]),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "café ☕"


# ---------------------------------------------------------------- blank CSV


@pytest.mark.parametrize("text", ["\n", "\n\n\n", "\r\n\r\n", "   \n\t\n", "\ufeff\n\n"])
def test_a_csv_of_blank_lines_says_it_has_no_rows(api, text):
    before = stored(api)
    response = api.upload_csv(text, target="label")
    assert response.status_code == 400, response.text
    assert "blank lines" in response.json()["detail"] and "no rows" in response.json()["detail"]
    assert stored(api) == before


def test_blank_lines_around_a_real_table_are_skipped(api):
    response = api.upload_csv("\n\na,label\n\n1,0\n  \n2,1\n3,0\n\n", target="label")
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 3


def test_a_header_without_rows_is_named_as_such(api):
    response = api.upload_csv("a,label\n\n\n", target="label")
    assert response.status_code == 400 and "no data rows" in response.json()["detail"]


# ---------------------------------------------------------------- two Authorization headers


@pytest.mark.parametrize("route", [("GET", "/v1/jobs"), ("POST", "/v1/datasets"), ("GET", "/healthz"),
                                   ("GET", "/v1/jobs/0/model")])
def test_two_authorization_headers_are_refused(make_api, route):
    api = make_api(auth_required=True)
    keys = ApiKeys(api.store)
    alice, bob = keys.create("alice").token, keys.create("bob").token
    method, path = route
    for pair in ((alice, bob), (alice, alice), ("garbage", alice)):
        headers = [("authorization", f"Bearer {pair[0]}"), ("authorization", f"Bearer {pair[1]}")]
        kwargs = {"files": {"file": ("d.npz", NPZ)}} if method == "POST" else {}
        response = api.client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 400, response.text
        assert "more than one Authorization header" in response.json()["detail"]
    assert api.store.list_datasets(owner="alice")[-1].source == "builtin" and api.stored_dataset_files() == []
    one = api.client.get("/v1/jobs", headers={"authorization": f"Bearer {alice}"})
    assert one.status_code == 200
