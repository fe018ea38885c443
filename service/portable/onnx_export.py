"""A trained Model as an ONNX graph (onnx.helper), node for node what the engine computes.

The graph (opset 13, IR version 8, float32; input `input` of shape [batch, input_size]):

    Sub(mean), Div(std)                            standardization, when the model has it
    per layer i:  Gemm(x, weight, bias)            x @ weight + bias
                  Sub(bn_mean), Mul(bn_inv_std),   batch norm with the running statistics,
                  Mul(bn_gamma), Add(bn_beta)      inv_std = 1 / sqrt(bn_var + eps) as the engine rounds it
                  the activation                   Relu, LeakyRelu(alpha=LEAKY_RELU_SLOPE), Elu(alpha=1),
                                                   Tanh, Sigmoid, Softmax(axis=1); linear adds no node

Outputs, the engine's Model.predict / predict_proba:
- classifiers: `label` [batch], the class labels themselves (int64, string, double or bool, as the
  model's `classes`), and `probabilities` [batch, classes], one column per class in `classes` order
  (a sigmoid output p becomes [1 - p, p]; its label is classes[p > 0.5]);
- regressors: `predictions`, [batch] for a model trained on a vector target, else [batch, outputs];
- autoencoders: `predictions` [batch, inputs], the reconstruction in the inputs' own units (an mse
  autoencoder learns standardized inputs: Mul(std), Add(mean) undo that, as Model.predict does);
- encoders (no loss; every layer a hidden one): `predictions` [batch, code], the codes.

The bytes depend on the model file alone (no job id, no time), so their sha256 is stable.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.version import package_version
from worker.nn import Model, names
from worker.nn.activations import LEAKY_RELU_SLOPE
from worker.nn.network import BN_EPSILON

OPSET = 13
IR_VERSION = 8  # what opset 13 needs; onnxruntime 1.10 and later load it
ELU_ALPHA = 1.0  # the engine's elu is exp(z) - 1 for z < 0 (worker/nn/activations.py)
INPUT = "input"
TASKS = (*names.TASKS, "encoder")  # the engine's tasks, and an autoencoder's encoder part
META_KEYS = ("format", "format_version", "task", "loss", "classes", "target_ndim", "card")

# activation name -> (ONNX op, attributes); None: the identity, no node
ACTIVATION_OPS: dict[str, tuple[str, dict] | None] = {
    "linear": None,
    "relu": ("Relu", {}),
    "leaky_relu": ("LeakyRelu", {"alpha": LEAKY_RELU_SLOPE}),
    "elu": ("Elu", {"alpha": ELU_ALPHA}),
    "tanh": ("Tanh", {}),
    "sigmoid": ("Sigmoid", {}),
    "softmax": ("Softmax", {"axis": 1}),
}

LABEL_TYPES = {"i": TensorProto.INT64, "u": TensorProto.INT64, "U": TensorProto.STRING,
               "f": TensorProto.DOUBLE, "b": TensorProto.BOOL}


class NotExportable(ValueError):
    """The model uses something this exporter cannot express in ONNX; the message says what."""


class _Graph:
    """Nodes and initializers in the order they are added, with names chosen by the caller."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


def export_onnx(model: Model) -> bytes:
    """The serialized ONNX model; NotExportable says why a model cannot be expressed."""
    return to_onnx(model).SerializeToString(deterministic=True)


def to_onnx(model: Model) -> onnx.ModelProto:
    net, meta = model.network, model.meta
    if meta["task"] not in TASKS:
        raise NotExportable(f"a model of task {meta['task']!r} has no ONNX form here")
    if net.dtype != np.float32:
        raise NotExportable(f"the model is {net.dtype.name}; the ONNX export is float32 only")
    for i, layer in enumerate(net.layers):
        if layer.activation not in ACTIVATION_OPS:
            raise NotExportable(f"layer {i}'s activation {layer.activation!r} has no ONNX equivalent here")

    g = _Graph()
    params, buffers = net.params, net.buffers
    x = INPUT
    pre = meta["preprocessing"]
    if pre["standardize"]:  # cast as Model does: (X - mean) / std in float32
        mean, std = np.asarray(pre["mean"], net.dtype), np.asarray(pre["std"], net.dtype)
        x = g.node("Sub", [x, g.constant("preprocessing.mean", mean)], "standardize.centred")
        x = g.node("Div", [x, g.constant("preprocessing.std", std)], "standardize")
    for i, layer in enumerate(net.layers):
        key = f"layers.{i}"
        x = g.node("Gemm", [x, g.constant(f"{key}.weight", params[f"{key}.weight"]),
                            g.constant(f"{key}.bias", params[f"{key}.bias"])], f"{key}.dense")
        if layer.batch_norm:
            var = buffers[f"{key}.bn_var"]
            inv_std = np.reciprocal(np.sqrt(var + var.dtype.type(BN_EPSILON)))  # as _batch_norm_forward
            x = g.node("Sub", [x, g.constant(f"{key}.bn_mean", buffers[f"{key}.bn_mean"])], f"{key}.bn_centred")
            x = g.node("Mul", [x, g.constant(f"{key}.bn_inv_std", inv_std)], f"{key}.bn_normalized")
            x = g.node("Mul", [x, g.constant(f"{key}.bn_gamma", params[f"{key}.bn_gamma"])], f"{key}.bn_scaled")
            x = g.node("Add", [x, g.constant(f"{key}.bn_beta", params[f"{key}.bn_beta"])], f"{key}.batch_norm")
        op = ACTIVATION_OPS[layer.activation]
        if op is not None:
            x = g.node(op[0], [x], f"{key}.{layer.activation}", **op[1])

    batch = "batch"
    if model.is_classifier:
        outputs = _classifier_outputs(g, model, x, batch)
    else:
        outputs = _regressor_outputs(g, model, x, batch)
    graph = helper.make_graph(
        g.nodes, "backprop_lab_model",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, net.n_inputs])],
        outputs, initializer=g.initializers,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="backprop-lab", producer_version=package_version(),
        doc_string="A Backprop Lab model (see the README's 'The model as ONNX').",
    )
    helper.set_model_props(onnx_model, {f"backprop_lab.{key}": json.dumps(meta.get(key), sort_keys=True)
                                        for key in META_KEYS})
    return onnx_model


def _classifier_outputs(g: _Graph, model: Model, x: str, batch: str) -> list[onnx.ValueInfoProto]:
    labels = np.asarray(model.meta["classes"])
    label_type = LABEL_TYPES.get(labels.dtype.kind)
    if label_type is None or labels.ndim != 1:
        raise NotExportable(f"class labels of dtype {labels.dtype} have no ONNX tensor type here")
    labels = labels.astype(object if labels.dtype.kind == "U" else helper.tensor_dtype_to_np_dtype(label_type))
    n_classes = len(labels)
    if model.network.n_outputs == 1:  # sigmoid: P(classes[1]); predict is p > 0.5
        one = g.constant("one", np.ones(1, np.float32))
        complement = g.node("Sub", [one, x], "complement")
        g.node("Concat", [complement, x], "probabilities", axis=1)
        half = g.constant("half", np.full(1, 0.5, np.float32))
        positive = g.node("Greater", [x, half], "positive")
        index = g.node("Cast", [positive], "positive_index", to=TensorProto.INT64)
        index = g.node("Reshape", [index, g.constant("rows", np.array([-1], np.int64))], "label_index")
    else:  # softmax: predict is the first largest probability
        g.node("Identity", [x], "probabilities")
        index = g.node("ArgMax", ["probabilities"], "label_index", axis=1, keepdims=0)
    g.node("Gather", [g.constant("classes", labels), index], "label", axis=0)
    return [helper.make_tensor_value_info("label", label_type, [batch]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, n_classes])]


def _regressor_outputs(g: _Graph, model: Model, x: str, batch: str) -> list[onnx.ValueInfoProto]:
    n_outputs = model.network.n_outputs
    meta = model.meta
    if meta.get("target") == "standardized_input":  # back to the inputs' units, as Model.predict
        x = g.node("Mul", [x, "preprocessing.std"], "reconstruction.scaled")  # the standardization's own
        x = g.node("Add", [x, "preprocessing.mean"], "reconstruction")
    if meta["target_ndim"] == 1 and n_outputs == 1:  # predict gives (rows,)
        g.node("Reshape", [x, g.constant("rows", np.array([-1], np.int64))], "predictions")
        shape = [batch]
    else:
        g.node("Identity", [x], "predictions")
        shape = [batch, n_outputs]
    return [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, shape)]
