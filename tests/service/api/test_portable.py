"""/v1/jobs/{id}/model?format=onnx|npz, /v1/jobs/{id}/predict and the model card, on jobs trained by
the real worker code in-process (run_job) against a real store."""
from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.store import ApiKeys, Store
from tests.utils.api import job_body
from tests.utils.uploads import classification_arrays
from worker.datasets import load_builtin
from worker.model_card import arrays_sha256
from worker.nn import LayerConfig, OptimizerConfig, TrainConfig, Trainer, load_model
from worker.training import run_job

WORKER = "test-worker"


def trained_job(api, headers=None, **spec) -> dict:
    """Submit over HTTP, train with the worker's own code in this process; the finished job."""
    response = api.client.post("/v1/jobs", json=spec, headers=headers or {})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_job(api.store, job_id, worker_id=WORKER, lease_seconds=60) == "succeeded"
    return api.client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()


def model_bytes(api, job_id) -> bytes:
    with api.store.artifacts.open(api.store.model_file(job_id).key) as handle:
        return handle.read()


def engine_model(api, job_id):
    return load_model(io.BytesIO(model_bytes(api, job_id)))


def delete_model_object(api, job_id) -> None:
    """A read of the model from now on fails."""
    api.store.artifacts.delete(api.store.model_key(job_id))


def predict(api, job_id, inputs, headers=None):
    return api.client.post(f"/v1/jobs/{job_id}/predict", json={"inputs": inputs}, headers=headers or {})


IRIS = job_body("iris", epochs=3, model={"hidden_layers": [{"units": 8, "activation": "elu", "batch_norm": True}]})


# ---------------------------------------------------------------- ONNX download


def test_onnx_download_runs_in_onnxruntime_like_the_engine(api):
    job = trained_job(api, **IRIS)
    response = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    content = response.content
    sha256 = hashlib.sha256(content).hexdigest()
    assert response.headers["x-model-sha256"] == sha256 and response.headers["etag"] == f'"{sha256}"'
    assert response.headers["digest"] == "sha-256=" + base64.b64encode(bytes.fromhex(sha256)).decode()
    assert response.headers["content-disposition"] == f'attachment; filename="model-{job["id"]}.onnx"'
    onnx.checker.check_model(onnx.load_from_string(content), full_check=True)

    X = load_builtin("iris", 0).X
    label, probabilities = ort.InferenceSession(content).run(None, {"input": X.astype(np.float32)})
    model = engine_model(api, job["id"])
    np.testing.assert_allclose(probabilities, model.predict_proba(X), rtol=1e-5, atol=1e-5)
    assert np.array_equal(label, model.predict(X))

    again = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"})
    assert again.content == content  # deterministic (and cached)
    cached = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"},
                            headers={"If-None-Match": f'"{sha256}"'})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["x-model-sha256"] == sha256
    npz = api.client.get(f"/v1/jobs/{job['id']}/model", headers={"If-None-Match": f'"{sha256}"'})
    assert npz.status_code == 200, "the ONNX ETag is not the .npz's"


def test_npz_stays_the_default_with_its_own_sha256(api):
    job = trained_job(api, **IRIS)
    default = api.client.get(f"/v1/jobs/{job['id']}/model")
    explicit = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "npz"})
    assert default.status_code == explicit.status_code == 200
    assert default.content == explicit.content == model_bytes(api, job["id"])
    assert default.headers["x-model-sha256"] == hashlib.sha256(default.content).hexdigest()
    assert default.headers["content-disposition"] == f'attachment; filename="model-{job["id"]}.npz"'
    assert api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "pt"}).status_code == 422


def test_the_onnx_file_is_the_same_from_a_fresh_process_cache(api, make_api):
    job = trained_job(api, **IRIS)
    first = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"}).content
    other = make_api(store=api.store)  # another app: another cache, built again from the file
    assert other.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"}).content == first


def job_with_model(api, config: TrainConfig, X, y=None) -> tuple[str, object]:
    """A finished job whose model the engine trained here with `config` (models the API's specs
    cannot ask for yet: float64, autoencoders); (job id, the model)."""
    job_id = api.client.post("/v1/jobs", json=job_body("xor", epochs=1)).json()["id"]
    assert api.store.claim_job(job_id, WORKER, lease_seconds=60) is not None
    trainer = Trainer(config, X, y)
    trainer.fit()
    stored = api.store.artifacts.write(api.store.model_key(job_id), trainer.model.save)
    api.store.finish_job(job_id, WORKER, status="succeeded", stop_reason="completed", model=stored)
    return job_id, trainer.model


def float64_model_job(api) -> str:
    config = TrainConfig(hidden_layers=[LayerConfig(4, "tanh")], loss="categorical_crossentropy",
                         output_activation="softmax", epochs=1, batch_size=4, dtype="float64",
                         optimizer=OptimizerConfig("adam", 0.01), validation_split=0.0)
    return job_with_model(api, config, np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), np.array([0, 1, 1, 0]))[0]


def test_a_model_onnx_cannot_express_answers_409_saying_why(api):
    job_id = float64_model_job(api)
    response = api.client.get(f"/v1/jobs/{job_id}/model", params={"format": "onnx"})
    assert response.status_code == 409
    assert response.json() == {"detail": f"job {job_id}: the model cannot be exported to ONNX: the model is "
                                         "float64; the ONNX export is float32 only"}
    assert api.client.get(f"/v1/jobs/{job_id}/model").status_code == 200  # the .npz still downloads
    assert predict(api, job_id, [[0, 1]]).status_code == 200  # the engine runs it


def test_no_model_yet_409_and_unknown_job_404(api):
    job_id = api.client.post("/v1/jobs", json=job_body("iris")).json()["id"]
    for response in (api.client.get(f"/v1/jobs/{job_id}/model", params={"format": "onnx"}),
                     predict(api, job_id, [[1, 2, 3, 4]])):
        assert response.status_code == 409
        assert response.json() == {"detail": f"job {job_id} has no model (status queued)"}
    assert api.client.get(f"/v1/jobs/{job_id}").json()["model_card"] is None
    for response in (api.client.get("/v1/jobs/nope/model", params={"format": "onnx"}),
                     predict(api, "nope", [[1, 2, 3, 4]])):
        assert response.status_code == 404 and response.json() == {"detail": "job 'nope' not found"}


# ---------------------------------------------------------------- predict


def test_predict_answers_what_the_engine_predicts(api):
    job = trained_job(api, **IRIS)
    X = load_builtin("iris", 0).X[::7]
    response = predict(api, job["id"], X.tolist())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    model = engine_model(api, job["id"])
    assert set(body) == {"outputs", "classes", "probabilities", "labels"}
    assert body["classes"] == model.predict(X).tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(body["outputs"], model.predict_proba(X), rtol=1e-6, atol=1e-7)  # softmax
    assert body["labels"] == [0, 1, 2]


def test_predict_binary_labels_and_regression_values(api):
    dataset = api.upload_npz("binary", **classification_arrays(classes=2)).json()
    binary = trained_job(api, dataset={"id": dataset["id"]}, epochs=2, loss="binary_crossentropy")
    model = engine_model(api, binary["id"])
    X = np.random.default_rng(0).normal(size=(5, dataset["features"]))
    body = predict(api, binary["id"], X.tolist()).json()
    assert body["classes"] == model.predict(X).tolist() and body["labels"] == dataset["classes"]
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(body["outputs"], model.predict_proba(X)[:, 1:], rtol=1e-6, atol=1e-7)

    sine = trained_job(api, **job_body("sine", epochs=2))
    X = np.linspace(-3, 3, 7).reshape(-1, 1)
    body = predict(api, sine["id"], X.tolist()).json()
    assert set(body) == {"outputs"}
    np.testing.assert_allclose(np.array(body["outputs"])[:, 0], engine_model(api, sine["id"]).predict(X), rtol=1e-6)


def test_an_autoencoders_outputs_are_reconstructions_in_the_inputs_units(api):
    X = load_builtin("iris", 0).X
    config = TrainConfig(task="autoencoder", loss="mse", output_activation="linear", epochs=3, batch_size=16,
                         hidden_layers=[LayerConfig(3, "relu"), LayerConfig(2, "linear"), LayerConfig(3, "relu")],
                         optimizer=OptimizerConfig("adam", 0.01), validation_split=0.0)
    job_id, model = job_with_model(api, config, X)
    body = predict(api, job_id, X[:5].tolist()).json()
    assert set(body) == {"outputs"}
    np.testing.assert_allclose(body["outputs"], model.predict(X[:5]), rtol=1e-6, atol=1e-6)
    onnx_file = api.client.get(f"/v1/jobs/{job_id}/model", params={"format": "onnx"}).content
    (reconstruction,) = ort.InferenceSession(onnx_file).run(None, {"input": X.astype(np.float32)})
    np.testing.assert_allclose(reconstruction, model.predict(X), rtol=1e-5, atol=1e-5)


def test_predict_refuses_bad_rows_naming_the_row(api):
    job = trained_job(api, **IRIS)
    url = f"/v1/jobs/{job['id']}/predict"

    def errors(body) -> list[dict]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = api.client.post(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        return response.json()["detail"]

    wrong = errors({"inputs": [[1, 2, 3, 4], [1, 2, 3]]})
    assert wrong == [{"type": "row_width", "loc": ["body", "inputs", 1], "input": None,
                      "msg": "row 1 has 3 values; the model takes 4 inputs", "ctx": {"expected": 4, "found": 3}}]
    # Python's json reads NaN, Infinity and 1e999 (as inf); they are not JSON, and refused
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"):
        content = b'{"inputs": [[1, 2, 3, 4], [1, 2, %s, 4]]}' % token
        (error,) = errors(content)
        assert (error["type"], error["msg"]) == ("json_invalid", "JSON decode error"), token
        assert content.index(token) <= error["loc"][1] <= content.index(token) + 1, token  # at the token
    (error,) = errors({"inputs": [[1, 2, 3, 4], [1e39, 2, 3, 4]]})  # over float32's range
    assert error == {"type": "finite_number", "loc": ["body", "inputs", 1, 0], "input": None,
                     "msg": "row 1, column 0: 1e+39 is not a finite float32 number"}
    for value in ("1.5", True, None, [1]):
        (error,) = errors({"inputs": [[1, 2, 3, 4], [1, value, 3, 4]]})
        assert (error["type"], error["loc"]) == ("float_type", ["body", "inputs", 1, 1]), value
    assert errors({"inputs": []})[0]["type"] == "too_short"
    assert errors({"inputs": [[1, 2, 3, 4]], "extra": 1})[0]["loc"] == ["body", "extra"]
    assert errors({"rows": [[1, 2, 3, 4]]})[0]["type"] == "extra_forbidden"
    assert errors([[1, 2, 3, 4]])[0]["loc"] == ["body"]
    assert errors(b'{"inputs": [[1, 2')[0]["type"] == "json_invalid"
    unreadable = api.client.post(url, content=b'{"inputs": [[1, 2, 3, "\xff"]]}')
    assert unreadable.status_code == 400
    # numbers in any JSON spelling, and any content type, are fine
    fine = api.client.post(url, content=b'{"inputs": [[1, 2.5e0, -3E-1, 4]]}')
    assert fine.status_code == 200, fine.text


def test_predict_rows_are_capped_by_a_setting(make_api):
    api = make_api(max_predict_rows=3)
    job = trained_job(api, **IRIS)
    assert predict(api, job["id"], [[1, 2, 3, 4]] * 3).status_code == 200
    response = predict(api, job["id"], [[1, 2, 3, 4]] * 4)
    assert response.status_code == 422
    assert response.json()["detail"] == [{"type": "limit_exceeded", "loc": ["body", "inputs"], "input": None,
                                          "msg": "4 rows exceed the cap of 3 (MAX_PREDICT_ROWS)"}]
    assert api.client.get("/v1/limits").json()["max_predict_rows"] == 3


def test_the_second_predict_does_not_read_the_model_file(api, monkeypatch):
    job = trained_job(api, **IRIS)
    X = load_builtin("iris", 0).X[:3].tolist()
    first = predict(api, job["id"], X)
    assert first.status_code == 200
    delete_model_object(api, job["id"])
    monkeypatch.setattr(api.store, "model_file", None)  # and so would a lookup: a finished job's model is fixed
    second = predict(api, job["id"], X)
    assert second.status_code == 200 and second.json() == first.json()
    onnx_file = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"})
    assert onnx_file.status_code == 200  # exported from the loaded model, not from the file


@pytest.mark.allows_5xx  # the evicted model's file is deleted: ArtifactError, 503
def test_the_model_cache_is_bounded(make_api):
    api = make_api(model_cache_size=1)
    first, second = trained_job(api, **IRIS), trained_job(api, **job_body("iris", epochs=2, seed=5))
    row = [[5.1, 3.5, 1.4, 0.2]]
    assert predict(api, first["id"], row).status_code == 200
    assert predict(api, second["id"], row).status_code == 200  # evicts the first
    cache = api.client.app.state.model_cache
    assert len(cache.models) == 1
    delete_model_object(api, first["id"])
    evicted = predict(api, first["id"], row)  # it must be read again, and cannot be
    assert evicted.status_code == 503 and "is missing" in evicted.json()["detail"]


# ---------------------------------------------------------------- isolation


def test_another_owner_gets_404_for_predict_and_onnx(make_api):
    api = make_api(auth_required=True)
    keys = ApiKeys(api.store)
    alice, bob = ({"Authorization": f"Bearer {keys.create(name).token}"} for name in ("alice", "bob"))
    job = trained_job(api, headers=alice, **IRIS)
    row = [[5.1, 3.5, 1.4, 0.2]]
    assert predict(api, job["id"], row, headers=alice).status_code == 200
    assert api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"}, headers=alice).status_code == 200
    for response in (predict(api, job["id"], row, headers=bob),
                     api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"}, headers=bob)):
        assert response.status_code == 404 and response.json() == {"detail": f"job '{job['id']}' not found"}
    assert predict(api, job["id"], row).status_code == 401


# ---------------------------------------------------------------- model card


def test_the_model_card_is_on_the_job_and_in_the_file(api):
    job = trained_job(api, **job_body("iris", name="carded", tags=["a"], epochs=2, seed=7))
    card = job["model_card"]
    with np.load(io.BytesIO(model_bytes(api, job["id"])), allow_pickle=False) as f:
        assert json.loads(str(f["meta"]))["card"] == card
    assert card["dataset_id"] == "builtin:iris"
    assert card["dataset_sha256"] == arrays_sha256(load_builtin("iris", 7))
    # the README's recipe, on the spec GET /v1/jobs/{id} returns
    spec = {key: value for key, value in job["spec"].items() if key not in ("name", "tags")}
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    assert card["spec_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert card["numpy_version"] == np.__version__ and card["package_version"]
    assert card["blas"]["library"] and card["blas"]["threads"] >= 1
    assert (card["seed"], card["attempt"], card["resumed"], card["resumed_from_epoch"]) == (7, 1, False, None)


def test_an_uploaded_datasets_card_holds_its_stored_files_sha256(api):
    dataset = api.upload_npz("mine", **classification_arrays()).json()
    job = trained_job(api, dataset={"id": dataset["id"]}, epochs=1)
    with api.store.artifacts.open(api.store.dataset_key(dataset["id"])) as handle:
        stored = handle.read()
    assert job["model_card"]["dataset_id"] == dataset["id"]
    assert job["model_card"]["dataset_sha256"] == hashlib.sha256(stored).hexdigest()


def test_the_card_does_not_change_the_engines_reading_of_the_file(api):
    job = trained_job(api, **IRIS)
    model = engine_model(api, job["id"])
    assert model.meta["card"] == job["model_card"]
    assert load_model(io.BytesIO(api.client.get(f"/v1/jobs/{job['id']}/model").content)).meta == model.meta


# ---------------------------------------------------------------- artifacts in S3


def test_predict_and_onnx_read_the_model_from_s3(make_api, s3_settings, sqlite_database_url, clock):
    store = Store(s3_settings(database_url=sqlite_database_url), clock=clock)
    try:
        api = make_api(store=store)
        job = trained_job(api, **IRIS)
        X = load_builtin("iris", 0).X[::11]
        model = engine_model(api, job["id"])
        response = predict(api, job["id"], X.tolist())
        assert response.status_code == 200 and response.json()["classes"] == model.predict(X).tolist()
        onnx_file = api.client.get(f"/v1/jobs/{job['id']}/model", params={"format": "onnx"})
        assert onnx_file.status_code == 200
        assert onnx_file.headers["x-model-sha256"] == hashlib.sha256(onnx_file.content).hexdigest()
        delete_model_object(api, job["id"])
        assert predict(api, job["id"], X.tolist()).json() == response.json()  # cached: S3 is not asked again
    finally:
        store.dispose()
