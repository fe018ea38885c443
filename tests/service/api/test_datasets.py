"""/v1/datasets: uploads are validated before anything is stored; malformed ones answer 400."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from service.specs import BUILTIN_DATASETS
from tests.utils.uploads import classification_arrays, npy_bytes, regression_arrays, zip_bytes


def builtin_ids() -> list[str]:
    return [f"builtin:{name}" for name in sorted(BUILTIN_DATASETS)]


def test_upload_npz_then_get_and_list(api):
    arrays = classification_arrays(rows=40, features=5, classes=4)
    response = api.upload_npz("blobs", **arrays)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert {k: dataset[k] for k in ("name", "rows", "features", "task", "classes", "source")} == {
        "name": "blobs", "rows": 40, "features": 5, "task": "classification", "classes": [0, 1, 2, 3],
        "source": "upload"}

    assert api.client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    listed = [item["id"] for item in api.client.get("/v1/datasets").json()]
    assert listed == builtin_ids() + [dataset["id"]]

    stored = api.stored_dataset_files()
    assert len(stored) == 1
    with np.load(stored[0], allow_pickle=False) as saved:
        assert saved["X"].dtype == np.float32
        np.testing.assert_allclose(saved["X"], arrays["X"].astype(np.float32))


def test_upload_with_validation_arrays_and_regression(api):
    train, val = regression_arrays(rows=30, seed=1), regression_arrays(rows=10, seed=2)
    dataset = api.upload_npz("waves", X=train["X"], y=train["y"], X_val=val["X"], y_val=val["y"]).json()
    assert (dataset["task"], dataset["classes"], dataset["has_validation"], dataset["val_rows"]) == (
        "regression", [], True, 10)


def test_upload_csv_with_string_labels(api):
    response = api.upload_csv("sepal,petal,label\n1.0,2.5,setosa\n1.5,2.0,virginica\n0.5,1.0,setosa\n")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["name"], dataset["rows"], dataset["features"], dataset["classes"]) == (
        "table", 3, 2, ["setosa", "virginica"])


def test_builtin_dataset_by_id(api):
    response = api.client.get("/v1/datasets/builtin:digits")
    assert response.status_code == 200
    assert (response.json()["rows"], response.json()["features"], response.json()["source"]) == (1797, 64, "builtin")


def test_unknown_dataset_404(api):
    response = api.client.get("/v1/datasets/0123456789abcdef")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


def _bomb() -> bytes:
    zeros = npy_bytes(np.zeros((2_000, 500)))
    return zip_bytes({"X.npy": zeros, "y.npy": npy_bytes(np.arange(2_000) % 2)}, compression=zipfile.ZIP_DEFLATED)


def _object_array() -> bytes:
    return zip_bytes({"X.npy": npy_bytes(np.eye(3)), "y.npy": npy_bytes(np.array([None, 1, "a"], dtype=object))})


BAD_UPLOADS = [
    # (file name, content, form fields, expected detail)
    ("t.csv", b"a,b,label\n1,2,0\n3,4\n", {"target": "label"}, "line 3: expected 3 fields"),
    ("t.csv", b"a,b,label\n1,2,0\n3,x,1\n", {"target": "label"}, "line 3: column 'b': 'x' is not a number"),
    ("t.csv", b"a,b,label\n1,2,0\n3,4,1\ninf,1,0\n", {"target": "label"}, "line 4: column 'a': 'inf' is not finite"),
    ("t.csv", b"1,2,3\n4,5,6\n", {"target": "3"}, "line 1: a header line"),
    ("t.csv", b"a,b\n1,2\n", {"target": "label"}, "target: no column named 'label'"),
    ("t.csv", b"a,label\n1,2\n", {}, "target: required for .csv uploads"),
    ("d.npz", b"PK not really", {}, "not a valid .npz"),
    ("d.npz", _object_array(), {}, "y: object arrays are not accepted"),
    ("d.npz", _bomb(), {}, "X: compression ratio"),
    ("d.npz", zip_bytes({"X.npy": npy_bytes(np.eye(3)), "y.npy": npy_bytes(np.arange(3)), "run.py": b"x"}), {},
     "unexpected members ['run.py']"),
    ("d.txt", b"hello", {}, "expected a .npz or .csv"),
]


@pytest.mark.parametrize("filename, content, fields, detail", BAD_UPLOADS,
                         ids=[case[3][:40] for case in BAD_UPLOADS])
def test_malformed_upload_400_and_nothing_stored(api, filename, content, fields, detail):
    response = api.client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert [item["id"] for item in api.client.get("/v1/datasets").json()] == builtin_ids()
    assert api.stored_dataset_files() == []


def test_missing_file_field_is_a_422_naming_it(api):
    response = api.client.post("/v1/datasets", data={"name": "x"})
    assert response.status_code == 422
    assert ["body", "file"] in [error["loc"] for error in response.json()["detail"]]


def test_upload_over_the_byte_cap_413(make_api):
    api = make_api(max_upload_bytes=4096)
    arrays = classification_arrays(rows=400, features=8)  # ~25 kB
    response = api.upload_npz("big", **arrays)
    assert response.status_code == 413, response.text
    assert api.stored_dataset_files() == []


def test_upload_just_over_the_cap_inside_the_multipart_slack_413(make_api):
    # the body cap allows multipart framing; the file itself is still held to MAX_UPLOAD_BYTES
    api = make_api(max_upload_bytes=4096)
    response = api.client.post("/v1/datasets", files={"file": ("d.csv", b"a,label\n" + b"1,0\n" * 1100)},
                               data={"target": "label"})
    assert response.status_code == 413
    assert "exceed the upload cap of 4096" in response.json()["detail"]


def test_upload_over_the_row_cap_413(make_api):
    api = make_api(max_dataset_rows=10)
    response = api.upload_npz("rows", **classification_arrays(rows=11))
    assert response.status_code == 413
    assert "11 rows exceed the cap of 10" in response.json()["detail"]


def test_task_override_field(api):
    X = np.random.default_rng(0).normal(size=(12, 2))
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=np.arange(12) % 3)
    response = api.client.post("/v1/datasets", files={"file": ("counts.npz", buffer.getvalue())},
                               data={"task": "regression"})
    assert response.status_code == 201, response.text
    assert (response.json()["task"], response.json()["name"]) == ("regression", "counts")
    response = api.client.post("/v1/datasets", files={"file": ("counts.npz", buffer.getvalue())},
                               data={"task": "clustering"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "task"]
