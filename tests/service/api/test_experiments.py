"""Issue 8 through the API: transfer learning, autoencoders and cross-validation, submitted over
HTTP and trained by the worker's own code in this process (run_job) against a real store."""
from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from service.specs import JobSpec
from service.store import ApiKeys
from tests.utils.api import job_body
from tests.utils.uploads import npz_bytes
from worker.datasets import load_builtin
from worker.nn import CrossValidation, load_model
from worker.training import run_job, train_config

WORKER = "test-worker"
DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)
# the source task learns digits on 1000 images; the target task (parity, few labels) is built from
# the other 797, so the source never saw a target image (as tests/worker/nn/test_transfer.py)
SOURCE_ROWS, TARGET_ROWS = np.split(np.random.default_rng(0).permutation(len(DIGITS_Y)), [1000])
TWO_LAYERS = {"hidden_layers": [{"units": 64}, {"units": 32}]}


def submit(api, headers=None, **spec):
    return api.client.post("/v1/jobs", json=spec, headers=headers or {})


def trained(api, headers=None, **spec) -> dict:
    response = submit(api, headers, **spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert run_job(api.store, job_id, worker_id=WORKER, lease_seconds=60) == "succeeded"
    return api.client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()


def upload(api, name: str, headers=None, **arrays) -> str:
    response = api.client.post("/v1/datasets", files={"file": (f"{name}.npz", npz_bytes(**arrays))},
                               data={"name": name}, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def downloaded_model(api, job_id, **params):
    response = api.client.get(f"/v1/jobs/{job_id}/model", params=params)
    assert response.status_code == 200, response.text
    return load_model(io.BytesIO(response.content)), response


def the_422(response) -> tuple[list, str]:
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    return error["loc"], error["msg"]


# ---------------------------------------------------------------- transfer learning


@pytest.fixture
def digits_source(api) -> dict:
    """A digit classifier trained on the source images (an uploaded dataset)."""
    dataset = upload(api, "digits-source", X=DIGITS_X[SOURCE_ROWS], y=DIGITS_Y[SOURCE_ROWS])
    return trained(api, dataset={"id": dataset, "validation_split": 0.0}, model=TWO_LAYERS,
                   optimizer={"name": "adam", "learning_rate": 0.005}, epochs=30)


def test_fine_tuning_beats_scratch_and_keeps_frozen_layers_bit_identical(api, digits_source):
    """Parity of digits from 40 labelled target images, validated on the other ~750: the source's
    two hidden layers with the first frozen, against the same spec from scratch, three label draws."""
    source = downloaded_model(api, digits_source["id"])[0].network.state_arrays()
    X, parity = DIGITS_X[TARGET_ROWS], DIGITS_Y[TARGET_ROWS] % 2
    gains = []
    for seed in range(3):
        labelled = np.random.default_rng(seed).choice(len(parity), 40, replace=False)
        test = np.setdiff1d(np.arange(len(parity)), labelled)
        dataset = upload(api, f"parity-{seed}", X=X[labelled], y=parity[labelled], X_val=X[test], y_val=parity[test])
        spec = dict(dataset={"id": dataset}, model=TWO_LAYERS, optimizer={"name": "adam", "learning_rate": 0.005},
                    epochs=40, batch_size=8, seed=seed)
        scratch = trained(api, **spec)
        tuned = trained(api, **spec, init_from={"job_id": digits_source["id"], "layers": [0, 1]}, freeze=[0])
        gains.append(tuned["latest_metrics"]["val_accuracy"] - scratch["latest_metrics"]["val_accuracy"])

        model = downloaded_model(api, tuned["id"])[0]
        after = model.network.state_arrays()
        for key in ("layers.0.weight", "layers.0.bias"):  # frozen: exactly the source's
            assert np.array_equal(after[key], source[key]), key
        assert not np.array_equal(after["layers.1.weight"], source["layers.1.weight"])  # fine-tuned
        # the source's input standardization came along (not the 40 target rows' own)
        source_meta = downloaded_model(api, digits_source["id"])[0].meta
        assert model.meta["preprocessing"] == source_meta["preprocessing"]
    print("fine-tuned minus scratch validation accuracy per seed:", gains)
    assert min(gains) > 0 and np.mean(gains) > 0.03, gains


def test_a_transfer_is_checked_at_submission(make_api):
    api = make_api(auth_required=True)
    keys = ApiKeys(api.store)
    alice, bob = ({"Authorization": f"Bearer {keys.create(name).token}"} for name in ("alice", "bob"))
    source = trained(api, alice, **job_body("digits", model=TWO_LAYERS, epochs=1))
    target = job_body("digits", model={"hidden_layers": [{"units": 64}, {"units": 16}]}, epochs=1)

    loc, msg = the_422(submit(api, alice, **target, init_from={"job_id": source["id"], "layers": [0, 1]}))
    assert (loc, msg) == (["body", "init_from", "layers", 1], "source layer 1 is 64→32, this spec's layer 1 is 64→16")
    assert submit(api, alice, **target, init_from={"job_id": source["id"], "layers": [0]}).status_code == 202

    # another owner's job reads exactly as one that does not exist
    for job_id in (source["id"], "0" * 32):
        loc, msg = the_422(submit(api, bob, **target, init_from={"job_id": job_id, "layers": [0]}))
        assert (loc, msg) == (["body", "init_from", "job_id"], f"no job {job_id} of yours")
    queued = submit(api, alice, **target).json()
    loc, msg = the_422(submit(api, alice, **target, init_from={"job_id": queued["id"], "layers": [0]}))
    assert loc == ["body", "init_from", "job_id"] and "is queued" in msg
    iris = job_body("iris", model={"hidden_layers": [{"units": 64}]}, epochs=1)  # 4 inputs, not 64
    loc, msg = the_422(submit(api, alice, **iris, init_from={"job_id": source["id"], "layers": [0]}))
    assert (loc, msg) == (["body", "init_from", "layers", 0], "source layer 0 is 64→64, this spec's layer 0 is 4→64")
    loc, _ = the_422(submit(api, alice, **target, freeze=[2]))
    assert loc == ["body", "freeze", 0]


# ---------------------------------------------------------------- autoencoders


def test_a_digits_autoencoder_reconstructs_through_16_units_and_serves_its_encoder(api):
    job = trained(api, **job_body("digits", task="autoencoder", epochs=30,
                                  model={"hidden_layers": [{"units": 32}, {"units": 16}, {"units": 32}]},
                                  optimizer={"name": "adam", "learning_rate": 0.003}))
    assert (job["spec"]["task"], job["spec"]["loss"], job["spec"]["model"]["output_activation"]) == \
        ("autoencoder", "mse", "linear")
    history = api.client.get(f"/v1/jobs/{job['id']}/history").json()["epochs"]
    assert all(row["val_loss"] is not None and row["val_accuracy"] is None for row in history)
    assert history[-1]["val_loss"] < history[0]["val_loss"]

    model, _ = downloaded_model(api, job["id"])
    assert (model.task, model.network.n_outputs, model.meta["target"]) == ("autoencoder", 64, "standardized_input")
    # mse is measured on standardized inputs: compare with their variance (the mse of predicting each
    # feature's mean), over every feature, on all 1797 images
    X = load_builtin("digits", 0).X
    standardized = model.prepare(X)
    variance = float(standardized.var(axis=0).mean())
    reconstruction = float(((model.network.predict_raw(standardized) - standardized) ** 2).mean())
    print(f"digits autoencoder: reconstruction mse {reconstruction:.3f}, variance {variance:.3f} (standardized)")
    assert reconstruction < 0.35 * variance
    assert history[-1]["val_loss"] < 0.5 * variance  # held-out images too

    encoder, response = downloaded_model(api, job["id"], part="encoder")
    assert encoder.task == "encoder" and [la.units for la in encoder.network.layers] == [32, 16]
    codes = encoder.predict(X[:50])
    assert codes.shape == (50, 16)
    np.testing.assert_array_equal(codes, model.encoder().predict(X[:50]))
    assert 'filename="encoder-' in response.headers["content-disposition"]
    again = api.client.get(f"/v1/jobs/{job['id']}/model", params={"part": "encoder"})
    assert again.content == response.content and again.headers["x-model-sha256"] == response.headers["x-model-sha256"]

    onnx_encoder = api.client.get(f"/v1/jobs/{job['id']}/model", params={"part": "encoder", "format": "onnx"})
    assert onnx_encoder.status_code == 200
    session = ort.InferenceSession(onnx_encoder.content, providers=["CPUExecutionProvider"])
    (onnx_codes,) = session.run(None, {"input": X[:50].astype(np.float32)})
    np.testing.assert_allclose(onnx_codes, codes, rtol=1e-4, atol=1e-4)


def test_the_encoder_part_is_only_for_autoencoders(api):
    classifier = trained(api, **job_body("iris", epochs=1))
    loc, msg = the_422(api.client.get(f"/v1/jobs/{classifier['id']}/model", params={"part": "encoder"}))
    assert loc == ["query", "part"] and "classification" in msg
    assert api.client.get(f"/v1/jobs/{classifier['id']}/model", params={"part": "decoder"}).status_code == 422
    assert api.client.get(f"/v1/jobs/{'0' * 32}/model", params={"part": "encoder"}).status_code == 404


# ---------------------------------------------------------------- cross-validation


def test_cross_validation_stores_each_fold_and_keeps_the_refit_on_all_rows(api):
    spec = job_body("iris", epochs=6, seed=3, cross_validation={"folds": 3}, model={"hidden_layers": [{"units": 8}]},
                    optimizer={"name": "adam", "learning_rate": 0.05},
                    early_stopping={"monitor": "val_accuracy", "patience": 2})
    job = trained(api, **spec)
    summary = job["cross_validation"]
    assert summary["monitor"] == "val_accuracy" and [f["fold"] for f in summary["folds"]] == [0, 1, 2]

    history = api.client.get(f"/v1/jobs/{job['id']}/history").json()["epochs"]
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))  # job-wide, increasing
    assert [row["fold"] for row in history] == sorted(row["fold"] for row in history)
    for fold in summary["folds"]:
        rows = api.client.get(f"/v1/jobs/{job['id']}/history", params={"fold": fold["fold"]}).json()["epochs"]
        assert {row["fold"] for row in rows} == {fold["fold"]}
        assert [row["fold_epoch"] for row in rows] == list(range(1, fold["epochs_run"] + 1))
        best = rows[fold["best_epoch"] - 1]
        assert fold["best_metrics"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    accuracies = [f["best_metrics"]["val_accuracy"] for f in summary["folds"]]
    assert summary["mean"]["val_accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["std"]["val_accuracy"] == pytest.approx(np.std(accuracies))

    refit = api.client.get(f"/v1/jobs/{job['id']}/history", params={"fold": 3}).json()["epochs"]
    assert len(refit) == summary["refit_epochs"] and all(row["val_loss"] is None for row in refit)
    csv_rows = api.client.get(f"/v1/jobs/{job['id']}/history", params={"fold": 3, "format": "csv"}).text.splitlines()
    assert csv_rows[0].endswith(",fold,fold_epoch") and csv_rows[1].endswith(",3,1")
    assert api.client.get(f"/v1/jobs/{job['id']}/history", params={"fold": -1}).status_code == 422
    assert job["progress"] == {"epoch": len(history), "epochs": 6 * 4}  # at most 3 folds and the refit

    # the kept model is the engine's refit, weight for weight
    data = load_builtin("iris", 3)
    cv = CrossValidation(train_config(JobSpec.model_validate(job["spec"])), data.X, data.y, folds=3)
    cv.fit()
    kept = downloaded_model(api, job["id"])[0].network.state_arrays()
    for key, value in cv.model.network.state_arrays().items():
        np.testing.assert_array_equal(kept[key], value)


def test_cross_validation_on_a_dataset_with_its_own_validation_set_is_refused(api):
    loc, msg = the_422(submit(api, **job_body("xor", cross_validation={"folds": 2})))
    assert loc == ["body", "cross_validation"] and "X_val" in msg


def test_a_sweep_of_cross_validated_jobs_is_refused(api):
    sweep = {"base": job_body("iris", cross_validation={"folds": 3}),
             "space": {"optimizer.learning_rate": {"choice": [0.01, 0.1]}}, "max_trials": 2}
    loc, msg = the_422(api.client.post("/v1/sweeps", json=sweep))
    assert loc == ["body", "base", "cross_validation"] and "folds' mean" in msg
