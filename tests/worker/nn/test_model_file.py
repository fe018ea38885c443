"""The model file: round trip, format, and the plain-NumPy snippet in README.md."""
import json

import numpy as np
import pytest

from tests.utils.readme import run_model_snippet as snippet, run_snippet
from worker.nn import LayerConfig, Model, OptimizerConfig, TrainConfig, Trainer, load_model



def trained(loss, output, y_kind, hidden, seed=0, **overrides):
    rng = np.random.default_rng(seed)
    X = rng.normal(3, 2, (160, 4))
    if y_kind == "classes":
        y = np.array(["cat", "dog", "eel"])[(X[:, 0] > 3).astype(int) + (X[:, 1] > 4).astype(int)]
    elif y_kind == "binary":
        y = (X[:, 0] + X[:, 2] > 6).astype(int) * 5 + 2  # labels 2 and 7
    else:
        y = np.stack([np.sin(X[:, 0]), X[:, 1] * 0.5], axis=1)
    config = TrainConfig(hidden_layers=hidden, loss=loss, output_activation=output, epochs=5, batch_size=16,
                         optimizer=OptimizerConfig("adam", 0.01), seed=seed, **overrides)
    trainer = Trainer(config, X, y)
    trainer.fit()
    return trainer.model, X, y


CASES = {
    "softmax+batchnorm": ("categorical_crossentropy", "softmax", "classes",
                          [LayerConfig(8, "relu", batch_norm=True), LayerConfig(6, "elu", dropout=0.2)]),
    "sigmoid": ("binary_crossentropy", "sigmoid", "binary", [LayerConfig(8, "leaky_relu"), LayerConfig(5, "sigmoid")]),
    "regression": ("mse", "linear", "values", [LayerConfig(8, "tanh", batch_norm=True)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_and_load_round_trip(case, tmp_path):
    model, X, y = trained(*CASES[case])
    model.save(tmp_path / "model.npz")
    loaded = load_model(tmp_path / "model.npz")
    assert np.array_equal(loaded.predict(X), model.predict(X))
    if model.is_classifier:
        assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.meta == model.meta
    with np.load(tmp_path / "model.npz", allow_pickle=False) as f:
        for i, layer in enumerate(model.meta["layers"]):
            assert f[f"layers.{i}.weight"].shape == (model.meta["input_size"] if i == 0 else
                                                     model.meta["layers"][i - 1]["units"], layer["units"])
            assert (f"layers.{i}.bn_gamma" in f.files) == layer["batch_norm"]
        assert json.loads(str(f["meta"]))["format_version"] == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_docs_snippet_reproduces_predict(case, tmp_path):
    source = snippet()
    code_lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) <= 12
    model, X, y = trained(*CASES[case])
    model.save(tmp_path / "model.npz")
    out = run_snippet(source, tmp_path / "model.npz", X)
    meta = model.meta
    if meta["loss"] == "categorical_crossentropy":
        np.testing.assert_allclose(out, model.predict_proba(X), atol=1e-5)
        assert np.array_equal(np.array(meta["classes"])[out.argmax(1)], model.predict(X))
    elif meta["loss"] == "binary_crossentropy":
        np.testing.assert_allclose(out[:, 0], model.predict_proba(X)[:, 1], atol=1e-5)
        assert np.array_equal(np.array(meta["classes"])[(out[:, 0] > 0.5).astype(int)], model.predict(X))
    else:
        np.testing.assert_allclose(out, model.predict(X), rtol=1e-4, atol=1e-5)


def test_meta_describes_the_model():
    model, X, y = trained(*CASES["softmax+batchnorm"], validation_split=0.0)
    meta = model.meta
    assert meta["classes"] == ["cat", "dog", "eel"] and meta["input_size"] == 4 and meta["output_size"] == 3
    assert meta["activations"] == ["relu", "elu", "softmax"] and meta["loss"] == "categorical_crossentropy"
    assert np.allclose(meta["preprocessing"]["mean"], X.mean(0), rtol=1e-5)
    binary, _, _ = trained(*CASES["sigmoid"])
    assert binary.meta["classes"] == [2, 7] and set(binary.predict(X)) <= {2, 7}


def test_gradients_are_keyed_like_the_model_file(tmp_path):
    model, X, y = trained(*CASES["softmax+batchnorm"])
    model.save(tmp_path / "m.npz")
    loss, grads = model.loss_and_gradients(X, y)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        trainable = {k for k in f.files if k != "meta" and not k.endswith(("bn_mean", "bn_var"))}
        assert set(grads) == trainable
        assert all(grads[k].shape == f[k].shape for k in grads)
    assert loss > 0


def test_a_damaged_model_file_is_refused_with_the_reason(tmp_path):
    model, _, _ = trained(*CASES["regression"])
    arrays = dict(model.network.state_arrays())
    del arrays["layers.1.bias"]
    np.savez(tmp_path / "bad.npz", **arrays, meta=np.array(json.dumps(model.meta)))
    with pytest.raises(ValueError, match=r"missing arrays \['layers.1.bias'\]"):
        load_model(tmp_path / "bad.npz")
    np.savez(tmp_path / "nometa.npz", **model.network.state_arrays())
    with pytest.raises(ValueError, match="no 'meta'"):
        load_model(tmp_path / "nometa.npz")


def test_predict_checks_the_input_width():
    model, X, _ = trained(*CASES["regression"])
    with pytest.raises(ValueError, match="X: has 3 features, expected 4"):
        model.predict(X[:, :3])
    assert isinstance(model, Model) and model.predict(X).shape == (160, 2)
