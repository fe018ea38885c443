"""The trained model users download, and what runs it.

File format (format_version 1): an `.npz` readable with `np.load(path, allow_pickle=False)`:
`layers.{i}.weight` (fan_in x fan_out), `layers.{i}.bias`, and for batch-norm layers
`layers.{i}.bn_gamma`, `bn_beta`, `bn_mean`, `bn_var`; plus `meta`, a JSON string with the format
version, each layer's units/activation/batch_norm, the loss, input preprocessing (mean/std),
class labels, and input/output sizes (models trained by the service add `card`, what produced
them: worker/model_card.py). Layer i computes
`act_i(bn_i(x @ weight + bias))`, with `bn(z) = (z - bn_mean) / sqrt(bn_var + eps) * bn_gamma + bn_beta`.

`task` is "classification", "regression", "autoencoder" (outputs reconstruct the inputs: in
standardized units when meta `target` is "standardized_input", as they are when `target` is
"input") or "encoder" (`loss` null: every layer is a hidden one and the output is the code, e.g.
an autoencoder's layers up to its narrowest, from `Model.encoder()`).
"""
from __future__ import annotations

import numpy as np

from .checkpoint import load_npz, write_npz
from .data import check_features, encode_targets, standardize_inplace
from .metrics import predicted_classes
from .network import BN_EPSILON, LayerSpec, Network, zeros_like_params

FORMAT = "backprop-lab-model"
FORMAT_VERSION = 1


def build_meta(net: Network, *, classes, mean, std, target_ndim: int, task: str | None = None) -> dict:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task or ("regression" if net.loss_name == "mse" else "classification"),
        "loss": net.loss_name,
        "dtype": net.dtype.name,
        "input_size": net.n_inputs,
        "output_size": net.n_outputs,
        "layers": [{"units": la.units, "activation": la.activation, "batch_norm": la.batch_norm,
                    "dropout": la.dropout} for la in net.layers],
        "activations": [la.activation for la in net.layers],
        "batch_norm_epsilon": BN_EPSILON,
        "preprocessing": {
            "standardize": mean is not None,
            "mean": None if mean is None else [float(v) for v in mean],
            "std": None if std is None else [float(v) for v in std],
        },
        "classes": classes,
        "target_ndim": target_ndim,
    }
    if task == "autoencoder":  # mse learns the standardized inputs; binary_crossentropy the raw ones
        meta["target"] = "standardized_input" if net.loss_name == "mse" and mean is not None else "input"
    return meta


def network_from_meta(meta: dict) -> Network:
    layers = [LayerSpec(la["units"], la["activation"], la.get("dropout", 0.0), la["batch_norm"])
              for la in meta["layers"]]
    return Network(meta["input_size"], layers, meta["loss"], meta["dtype"])


class Model:
    """A trained network with its preprocessing and labels: predict, save, check gradients."""

    def __init__(self, network: Network, meta: dict):
        self.network = network
        self.meta = meta
        pre = meta["preprocessing"]
        dt = network.dtype
        self._mean = None if not pre["standardize"] else np.asarray(pre["mean"], dt)
        self._std = None if not pre["standardize"] else np.asarray(pre["std"], dt)
        self.classes = None if meta["classes"] is None else np.asarray(meta["classes"])

    def __repr__(self):
        return f"Model({self.network!r}, task={self.meta['task']!r})"

    @property
    def is_classifier(self) -> bool:
        return self.meta["task"] == "classification"

    @property
    def task(self) -> str:
        return self.meta["task"]

    def prepare(self, X) -> np.ndarray:
        """Inputs cast to the model's dtype and standardized as in training."""
        X = check_features(X, "X", self.network.n_inputs)
        X = np.array(X, dtype=self.network.dtype, order="C", copy=True)
        if self._mean is not None:
            standardize_inplace(X, self._mean, self._std)
        return X

    def _outputs(self, X) -> np.ndarray:
        return self.network.predict_raw(self.prepare(X))

    def predict(self, X) -> np.ndarray:
        """Class labels for classifiers; values for regressors ((rows,) when trained on a vector);
        reconstructions in the inputs' own units for autoencoders; codes for encoders."""
        out = self._outputs(X)
        if self.is_classifier:
            return self.classes[predicted_classes(out)]
        if self.meta.get("target") == "standardized_input":
            out *= self._std
            out += self._mean
        return out[:, 0] if self.meta["target_ndim"] == 1 and out.shape[1] == 1 else out

    def encoder(self) -> "Model":
        """An autoencoder's layers up to its narrowest hidden layer (the first of least width), as
        a model of task "encoder" with the same input preprocessing: `predict` gives the codes."""
        if self.task != "autoencoder":
            raise ValueError(f"encoder: only an autoencoder has one; this model is a {self.task} model")
        hidden = self.network.layers[:-1]
        if not hidden:
            raise ValueError("encoder: this autoencoder has no hidden layer")
        widths = [layer.units for layer in hidden]
        code = widths.index(min(widths))
        net = Network(self.network.n_inputs, hidden[:code + 1], None, self.network.dtype)
        source = self.network.state_arrays()
        for key, target in net.state_arrays().items():
            np.copyto(target, source[key])
        meta = build_meta(net, classes=None, mean=self._mean, std=self._std, target_ndim=2, task="encoder")
        return Model(net, meta)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one column per class in `classes` order (two for binary)."""
        if not self.is_classifier:
            raise TypeError(f"predict_proba: this model is a {self.task} model, not a classifier")
        out = self._outputs(X)
        if out.shape[1] == 1:
            return np.concatenate([1.0 - out, out], axis=1)
        return out

    def loss_and_gradients(self, X, y=None, *, training: bool = False) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss of (X, y) and its gradients, keyed exactly like the model file.

        X is raw input (standardized here as in predict); y as given to training (None for an
        autoencoder: its target is X, as in training). Dropout is off; batch norm uses running
        statistics, or batch statistics with `training=True` (running statistics are left
        unchanged either way). The L2 penalty is not included.
        """
        net = self.network
        if net.loss is None:
            raise TypeError("loss_and_gradients: an encoder has no loss")
        if self.task == "autoencoder":
            if y is not None:
                raise ValueError("y: an autoencoder's target is X; give None")
            T = self.prepare(X) if self.meta["target"] == "standardized_input" else \
                np.array(check_features(X, "X", net.n_inputs), dtype=net.dtype, order="C")
            X = self.prepare(X)
        else:
            X = self.prepare(X)
            T = encode_targets(y, net.loss_name, self.meta["classes"], net.dtype).T
        if T.shape[0] != X.shape[0]:
            raise ValueError(f"y: has {T.shape[0]} rows but X has {X.shape[0]}")
        saved = {k: v.copy() for k, v in net.buffers.items()}
        ws = net.workspace(X.shape[0])
        b = ws.batch(X.shape[0])
        grads = zeros_like_params(net.params)
        try:
            loss_sum = net.forward(b, X, T, training=training, rng=None)
            net.backward(b, X, T, grads)
        finally:
            for k, v in saved.items():
                np.copyto(net.buffers[k], v)
        return loss_sum / X.shape[0], grads

    def save(self, target) -> None:
        """Write the model file to `target` (a path or a binary file)."""
        write_npz(target, self.network.state_arrays(), self.meta)


def load_model(path) -> Model:
    """Read a model file (allow_pickle=False) and check it names every array it needs."""
    arrays, meta = load_npz(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a model file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: model format_version {meta.get('format_version')} is not supported")
    net = network_from_meta(meta)
    expected = net.state_arrays()
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    for key, target in expected.items():
        value = arrays[key]
        if value.shape != target.shape:
            raise ValueError(f"{path}: {key} has shape {value.shape}, expected {target.shape}")
        if value.dtype != target.dtype:
            raise ValueError(f"{path}: {key} has dtype {value.dtype}, expected {target.dtype}")
        np.copyto(target, value)
    return Model(net, meta)
