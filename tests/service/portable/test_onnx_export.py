"""The ONNX export against the engine: every activation and loss of the engine's registries, batch
norm and standardization on and off, each kind of class label; checked by onnx's full checker and
run in onnxruntime, whose outputs must equal Model.predict / predict_proba to 1e-5."""
from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.portable import onnx_export
from service.portable.onnx_export import NotExportable, export_onnx
from tests.utils.readme import run_onnx_snippet, run_snippet
from worker.nn import LayerConfig, OptimizerConfig, TrainConfig, Trainer, load_model
from worker.nn.activations import ACTIVATIONS
from worker.nn.losses import LOSS_FUNCTIONS

HIDDEN_ACTIVATIONS = sorted(name for name in ACTIVATIONS if name != "softmax")  # softmax: output only
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def inputs(rows: int = 96, features: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(3.0, 2.0, (rows, features))  # far from standardized


def targets(loss: str, X: np.ndarray, labels=None, outputs: int = 1):
    if loss == "mse":
        y = np.stack([np.sin(X[:, 0]) + X[:, 1] * 0.3, X[:, 2] * 0.5][:outputs], axis=1)
        return y[:, 0] if outputs == 1 else y
    labels = labels if labels is not None else ([0, 1] if loss == "binary_crossentropy" else ["cat", "dog", "eel"])
    score = X[:, 0] + 0.5 * X[:, 1]
    bins = np.quantile(score, np.linspace(0, 1, len(labels) + 1)[1:-1])
    return np.asarray(labels)[np.digitize(score, bins)]


def trained(loss: str, output: str, hidden: list[LayerConfig], *, standardize=True, y=None, X=None, dtype="float32"):
    X = inputs() if X is None else X
    y = targets(loss, X) if y is None else y
    config = TrainConfig(hidden_layers=hidden, loss=loss, output_activation=output, epochs=3, batch_size=16,
                         optimizer=OptimizerConfig("adam", 0.01), seed=1, standardize=standardize,
                         validation_split=0.0, dtype=dtype)
    trainer = Trainer(config, X, y)
    trainer.fit()
    return trainer.model, X


def run_onnx(model) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    content = export_onnx(model)
    proto = onnx.load_from_string(content)
    onnx.checker.check_model(proto, full_check=True)
    return proto, ort.InferenceSession(content)


def assert_matches_engine(model, X) -> None:
    proto, session = run_onnx(model)
    assert proto.opset_import[0].version >= 13
    (graph_input,) = proto.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"  # symbolic batch
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": X.astype(np.float32)})))
    if not model.is_classifier:
        assert set(outputs) == {"predictions"}
        np.testing.assert_allclose(outputs["predictions"], model.predict(X), **TOLERANCE)
        assert outputs["predictions"].shape == model.predict(X).shape
        return
    assert set(outputs) == {"label", "probabilities"}
    probabilities = model.predict_proba(X)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, **TOLERANCE)
    # labels must agree wherever the decision is not a near tie (ties may round either way)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    assert clear.mean() > 0.8
    assert np.array_equal(outputs["label"][clear], model.predict(X)[clear])


@pytest.mark.parametrize("standardize", [True, False], ids=["standardized", "raw"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_every_hidden_activation(activation, batch_norm, standardize):
    hidden = [LayerConfig(7, activation, batch_norm=batch_norm), LayerConfig(5, activation, dropout=0.1)]
    model, X = trained("categorical_crossentropy", "softmax", hidden, standardize=standardize)
    assert_matches_engine(model, X)


def loss_cases() -> list[tuple[str, str]]:
    """Every loss with each output activation it accepts (mse: any activation)."""
    cases = []
    for loss, cls in LOSS_FUNCTIONS.items():
        output = getattr(cls, "output_activation", None)
        cases += [(loss, output)] if output else [(loss, name) for name in sorted(ACTIVATIONS)]
    return cases


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("loss, output", loss_cases())
def test_every_loss_and_output_activation(loss, output, batch_norm):
    model, X = trained(loss, output, [LayerConfig(8, "tanh", batch_norm=batch_norm)])
    assert_matches_engine(model, X)


@pytest.mark.parametrize("labels", [["cat", "dog", "eel"], [3, 10, 42], [0.5, 1.5, 2.5], [False, True]],
                         ids=["strings", "ints", "floats", "bools"])
def test_label_outputs_carry_the_class_labels_themselves(labels):
    loss = "binary_crossentropy" if len(labels) == 2 else "categorical_crossentropy"
    output = "sigmoid" if len(labels) == 2 else "softmax"
    X = inputs()
    model, _ = trained(loss, output, [LayerConfig(6, "relu")], y=targets(loss, X, labels), X=X)
    assert model.meta["classes"] == labels
    assert_matches_engine(model, X)


def test_binary_probabilities_are_the_complement_pair_and_regression_keeps_its_shape():
    model, X = trained("binary_crossentropy", "sigmoid", [LayerConfig(4, "elu")])
    _, session = run_onnx(model)
    label, probabilities = session.run(None, {"input": X.astype(np.float32)})
    assert probabilities.shape == (len(X), 2) and label.shape == (len(X),)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)

    X = inputs()
    two, _ = trained("mse", "linear", [LayerConfig(4, "relu")], y=targets("mse", X, outputs=2), X=X)
    _, session = run_onnx(two)
    (predictions,) = session.run(None, {"input": X.astype(np.float32)})
    assert predictions.shape == (len(X), 2)
    assert_matches_engine(two, X)


@pytest.mark.parametrize("loss, output, standardize", [("mse", "linear", True), ("mse", "linear", False),
                                                      ("binary_crossentropy", "sigmoid", False)])
def test_autoencoders_reconstruct_and_their_encoders_give_the_codes(loss, output, standardize):
    X = np.random.default_rng(2).uniform(0, 1, (96, 6)) if loss == "binary_crossentropy" else inputs(features=6)
    config = TrainConfig(task="autoencoder", loss=loss, output_activation=output, standardize=standardize,
                         hidden_layers=[LayerConfig(5, "elu", batch_norm=True), LayerConfig(3, "tanh"),
                                        LayerConfig(5, "relu")],
                         optimizer=OptimizerConfig("adam", 0.01), epochs=3, batch_size=16, seed=1,
                         validation_split=0.0)
    trainer = Trainer(config, X)
    trainer.fit()
    autoencoder = trainer.model
    assert autoencoder.task == "autoencoder"
    assert_matches_engine(autoencoder, X)
    encoder = autoencoder.encoder()
    assert encoder.task == "encoder" and encoder.network.n_outputs == 3
    assert_matches_engine(encoder, X)


def test_the_bytes_depend_on_the_model_file_alone(tmp_path):
    model, X = trained("categorical_crossentropy", "softmax", [LayerConfig(6, "leaky_relu", batch_norm=True)])
    content = export_onnx(model)
    assert export_onnx(model) == content
    model.save(tmp_path / "model.npz")
    assert export_onnx(load_model(tmp_path / "model.npz")) == content
    assert export_onnx(load_model(io.BytesIO((tmp_path / "model.npz").read_bytes()))) == content


def test_exact_activation_parameters():
    model, _ = trained("categorical_crossentropy", "softmax", [LayerConfig(4, "leaky_relu"), LayerConfig(4, "elu")])
    proto = onnx.load_from_string(export_onnx(model))
    attributes = {node.op_type: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                  for node in proto.graph.node}
    assert attributes["LeakyRelu"]["alpha"] == np.float32(0.01)  # activations.LEAKY_RELU_SLOPE
    assert attributes["Elu"]["alpha"] == 1.0
    assert attributes["Softmax"]["axis"] == 1


def test_the_exporter_covers_the_engines_activation_registry():
    assert onnx_export.ACTIVATION_OPS.keys() == ACTIVATIONS.keys()


def test_an_activation_without_an_onnx_mapping_is_not_exportable_saying_which(monkeypatch):
    model, _ = trained("categorical_crossentropy", "softmax", [LayerConfig(4, "elu")])
    monkeypatch.delitem(onnx_export.ACTIVATION_OPS, "elu")
    with pytest.raises(NotExportable, match="layer 0's activation 'elu' has no ONNX equivalent"):
        export_onnx(model)


def test_a_float64_model_is_not_exportable():
    model, _ = trained("mse", "linear", [LayerConfig(4, "tanh")], dtype="float64")
    with pytest.raises(NotExportable, match="float64"):
        export_onnx(model)


@pytest.mark.parametrize("loss, output", [("categorical_crossentropy", "softmax"), ("binary_crossentropy", "sigmoid"),
                                          ("mse", "linear")])
def test_the_readme_onnxruntime_snippet(loss, output, tmp_path):
    source = run_onnx_snippet()
    code_lines = [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) <= 5
    model, X = trained(loss, output, [LayerConfig(8, "relu", batch_norm=True)])
    (tmp_path / "model.onnx").write_bytes(export_onnx(model))
    outputs = run_snippet(source, tmp_path / "model.onnx", X, "outputs")
    if model.is_classifier:
        label, probabilities = outputs
        np.testing.assert_allclose(probabilities, model.predict_proba(X), **TOLERANCE)
        assert (label == model.predict(X)).mean() > 0.95
    else:
        (predictions,) = outputs
        np.testing.assert_allclose(predictions, model.predict(X), **TOLERANCE)
