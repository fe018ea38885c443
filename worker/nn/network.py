"""A stack of dense layers: parameters, forward and backward over preallocated buffers.

Parameters live in one dict keyed exactly like the model file (`layers.{i}.weight` fan_in x
fan_out, `layers.{i}.bias`, `layers.{i}.bn_gamma`/`bn_beta`); batch-norm running statistics
(`layers.{i}.bn_mean`/`bn_var`) live in `buffers`. A hidden layer is
dense -> [batch norm] -> activation -> [inverted dropout]; the last layer is dense -> loss.
A network without a loss (an encoder) is hidden layers only: its output is the last one's.
Frozen hidden layers (`freeze`) get no gradients: backward stops at the lowest trainable layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import ACTIVATIONS, DERIVATIVES, OUTPUT_ONLY_ACTIVATIONS
from .initializers import INITIALIZERS, default_initializer
from .losses import make_loss

BN_MOMENTUM = 0.99  # Keras's BatchNormalization defaults
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class LayerSpec:
    units: int
    activation: str
    dropout: float = 0.0
    batch_norm: bool = False


def weight_key(i: int) -> str:
    return f"layers.{i}.weight"


def layer_of(key: str) -> int:
    """The layer index of a parameter or buffer key (`layers.{i}.…`)."""
    return int(key.split(".")[1])


class Network:
    def __init__(self, n_inputs: int, layers: list[LayerSpec], loss: str | None, dtype="float32"):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: must be float32 or float64, not {dtype!r}")
        if n_inputs < 1:
            raise ValueError("inputs: need at least one feature")
        if not layers:
            raise ValueError("layers: need at least one")
        n_hidden = len(layers) - 1 if loss is not None else len(layers)
        for i, layer in enumerate(layers):
            if layer.units < 1:
                raise ValueError(f"layers[{i}].units: must be at least 1")
            if layer.activation not in ACTIVATIONS:
                raise ValueError(f"layers[{i}].activation: unknown {layer.activation!r}")
            if not 0.0 <= layer.dropout < 1.0:
                raise ValueError(f"layers[{i}].dropout: must be in [0, 1)")
            if i < n_hidden and layer.activation in OUTPUT_ONLY_ACTIVATIONS:
                raise ValueError(f"layers[{i}].activation: {layer.activation} is for the output layer only")
        if loss is not None and (layers[-1].dropout or layers[-1].batch_norm):
            raise ValueError("output layer: no dropout or batch norm")
        self.n_inputs = n_inputs
        self.layers = list(layers)
        self.loss_name = loss
        self.loss = make_loss(loss, layers[-1].activation) if loss is not None else None
        self._loss_layer = len(layers) - 1 if loss is not None else -1  # -1: no layer feeds a loss
        sizes = [n_inputs] + [layer.units for layer in layers]
        self.params: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        for i, (fan_in, layer) in enumerate(zip(sizes, layers)):
            self.params[weight_key(i)] = np.zeros((fan_in, layer.units), self.dtype)
            self.params[f"layers.{i}.bias"] = np.zeros(layer.units, self.dtype)
            if layer.batch_norm:
                self.params[f"layers.{i}.bn_gamma"] = np.ones(layer.units, self.dtype)
                self.params[f"layers.{i}.bn_beta"] = np.zeros(layer.units, self.dtype)
                self.buffers[f"layers.{i}.bn_mean"] = np.zeros(layer.units, self.dtype)
                self.buffers[f"layers.{i}.bn_var"] = np.ones(layer.units, self.dtype)
        # keys formatted once: the hot loop looks them up every batch
        self._dense_keys = [(weight_key(i), f"layers.{i}.bias") for i in range(len(layers))]
        self.freeze(())

    def freeze(self, hidden_layers) -> None:
        """Hold these hidden layers (0-based) fixed from now on: `trainable_params` leaves them out,
        backward computes no gradients for them and stops at the lowest trainable layer, and their
        batch norm runs on its running statistics (left unchanged), as Keras does for a frozen layer."""
        frozen = list(hidden_layers)
        n_hidden = len(self.layers) - 1 if self.loss is not None else len(self.layers)
        for position, i in enumerate(frozen):
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_hidden:
                raise ValueError(f"freeze[{position}]: {i!r} is not a hidden layer index (0..{n_hidden - 1})")
        if len(set(frozen)) != len(frozen):
            raise ValueError(f"freeze: lists a layer twice ({frozen})")
        self.frozen = frozenset(frozen)
        self._trainable = [i not in self.frozen for i in range(len(self.layers))]
        self._lowest_trainable = self._trainable.index(True) if any(self._trainable) else len(self.layers)
        self.trainable_params = {k: v for k, v in self.params.items() if layer_of(k) not in self.frozen}

    def __repr__(self):
        shape = "-".join(str(n) for n in [self.n_inputs] + [la.units for la in self.layers])
        return f"Network({shape}, loss={self.loss_name!r}, dtype={self.dtype.name})"

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].units

    def initialize(self, rng: np.random.Generator, init: str | None = None) -> None:
        """He or xavier weights (per layer from its activation unless `init`), zero biases."""
        if init is not None and init not in INITIALIZERS:
            raise ValueError(f"init: unknown {init!r}; choose from {sorted(INITIALIZERS)}")
        for i, layer in enumerate(self.layers):
            W = self.params[weight_key(i)]
            make = INITIALIZERS[init or default_initializer(layer.activation)]
            W[...] = make(rng, W.shape[0], W.shape[1], self.dtype)
            self.params[f"layers.{i}.bias"][...] = 0

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Parameters and running statistics: everything the model file holds."""
        return {**self.params, **self.buffers}

    def workspace(self, rows: int) -> "Workspace":
        return Workspace(self, rows)

    # ---------------------------------------------------------------- forward / backward

    def forward(self, b: "Batch", x, T, *, training: bool, rng=None) -> float:
        """Run `x` through the net into `b.P`; return the summed loss against targets `T`.

        In training, batch norm uses (and updates running statistics from) the batch, and
        dropout draws masks from `rng` (None turns dropout off, e.g. for gradient checks).
        """
        params = self.params
        b.training = training
        a = x
        last = self._loss_layer
        for i, layer in enumerate(self.layers):
            Z = b.Z[i]
            w_key, b_key = self._dense_keys[i]
            np.matmul(a, params[w_key], out=Z)
            Z += params[b_key]
            if i == last:
                return self.loss.forward(Z, T, b.P)
            A = b.A[i]
            if layer.batch_norm:
                self._batch_norm_forward(i, b, Z, A, training and self._trainable[i])
            ACTIVATIONS[layer.activation](A)
            if layer.dropout and training and rng is not None:
                mask = b.mask[i]
                keep = 1.0 - layer.dropout
                rng.random(dtype=self.dtype, out=mask)
                mask += keep  # floor(u + keep) is 1 exactly when u >= dropout rate
                np.floor(mask, out=mask)
                mask *= 1.0 / keep
                np.multiply(A, mask, out=b.D[i])
                b.dropped[i] = True
                a = b.D[i]
            else:
                b.dropped[i] = False
                a = A
        np.copyto(b.P, a)  # no loss: the network's output is its last hidden layer's
        return 0.0

    def _batch_norm_forward(self, i, b, Z, A, training):
        gamma = self.params[f"layers.{i}.bn_gamma"]
        beta = self.params[f"layers.{i}.bn_beta"]
        running_mean = self.buffers[f"layers.{i}.bn_mean"]
        running_var = self.buffers[f"layers.{i}.bn_var"]
        inv_std = b.inv_std[i]
        if training:
            m = Z.shape[0]
            mean = b.bn_mean[i]
            var = b.bn_var[i]
            np.mean(Z, axis=0, out=mean)
            Z -= mean
            np.einsum("ij,ij->j", Z, Z, out=var)
            var *= 1.0 / m
            running_mean *= BN_MOMENTUM
            running_mean += (1.0 - BN_MOMENTUM) * mean
            running_var *= BN_MOMENTUM
            running_var += (1.0 - BN_MOMENTUM) * var
            np.add(var, BN_EPSILON, out=inv_std)
        else:
            Z -= running_mean
            np.add(running_var, BN_EPSILON, out=inv_std)
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)
        Z *= inv_std  # Z now holds the normalized x-hat, kept for backward
        np.multiply(Z, gamma, out=A)
        A += beta

    def backward(self, b: "Batch", x, T, grads: dict[str, np.ndarray]) -> None:
        """Gradients of the mean loss of the last `forward` on `b` into `grads` (the keys of
        `trainable_params`); no work below the lowest trainable layer."""
        if self.loss is None:
            raise TypeError("backward: this network has no loss (an encoder)")
        params = self.params
        trainable = self._trainable
        floor = self._lowest_trainable
        last = len(self.layers) - 1
        dZ = b.delta[last]
        self.loss.delta(b.P, T, dZ)
        for i in range(last, floor - 1, -1):
            if i < last:
                layer = self.layers[i]
                dZ = b.delta[i]  # holds dL/d(layer output)
                if b.dropped[i]:
                    dZ *= b.mask[i]
                DERIVATIVES[layer.activation](b.A[i], dZ)
                if layer.batch_norm:
                    self._batch_norm_backward(i, b, dZ, grads)
            w_key, b_key = self._dense_keys[i]
            if trainable[i]:
                a_in = x if i == 0 else (b.D[i - 1] if b.dropped[i - 1] else b.A[i - 1])
                np.matmul(a_in.T, dZ, out=grads[w_key])
                np.add.reduce(dZ, axis=0, out=grads[b_key])  # np.sum's Python wrapper costs more than it
            if i > floor:
                np.matmul(dZ, params[w_key].T, out=b.delta[i - 1])

    def _batch_norm_backward(self, i, b, dY, grads):
        gamma = self.params[f"layers.{i}.bn_gamma"]
        if not self._trainable[i]:
            # frozen: forward used the running statistics, a per-unit affine map; no parameter grads
            dY *= gamma * b.inv_std[i]
            return
        x_hat = b.Z[i]
        m = dY.shape[0]
        g_gamma = grads[f"layers.{i}.bn_gamma"]
        g_beta = grads[f"layers.{i}.bn_beta"]
        np.sum(dY, axis=0, out=g_beta)
        np.einsum("ij,ij->j", dY, x_hat, out=g_gamma)
        if not b.training:
            # running statistics are constants: batch norm is a per-unit affine map
            dY *= gamma * b.inv_std[i]
            return
        # dz = inv_std / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)), dxhat = dY * gamma
        dY *= gamma
        dY -= (gamma * g_beta) * (1.0 / m)
        dY -= x_hat * ((gamma * g_gamma) * (1.0 / m))
        dY *= b.inv_std[i]

    # ---------------------------------------------------------------- inference

    def predict_raw(self, X, chunk_rows: int = 4096, workspace: "Workspace | None" = None) -> np.ndarray:
        """Output-layer predictions (probabilities for classifiers) for prepared inputs."""
        X = np.asarray(X)
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        ws = workspace or self.workspace(min(chunk_rows, max(X.shape[0], 1)))
        dummy_targets = np.zeros((ws.rows, self.n_outputs), self.dtype)
        for start in range(0, X.shape[0], ws.rows):
            stop = min(start + ws.rows, X.shape[0])
            b = ws.batch(stop - start)
            self.forward(b, X[start:stop], dummy_targets[: stop - start], training=False)
            out[start:stop] = b.P
        return out


class Batch:
    """Views of a workspace's buffers for `m` rows."""

    def __init__(self, ws: "Workspace", m: int):
        self.m = m
        self.x = ws.x[:m]
        self.t = ws.t[:m]
        self.labels = ws.labels[:m]
        self.Z = [z[:m] for z in ws.Z]
        self.A = [a[:m] for a in ws.A]
        self.D = [d[:m] if d is not None else None for d in ws.D]
        self.mask = [k[:m] if k is not None else None for k in ws.mask]
        self.delta = [d[:m] for d in ws.delta]
        self.P = ws.P[:m]
        self.inv_std, self.bn_mean, self.bn_var = ws.inv_std, ws.bn_mean, ws.bn_var
        self.dropped = [False] * len(ws.Z)
        self.training = False


class Workspace:
    """Every buffer one forward/backward pass needs, for up to `rows` rows, allocated once."""

    def __init__(self, net: Network, rows: int):
        dt = net.dtype
        self.rows = rows
        self.x = np.empty((rows, net.n_inputs), dt)
        self.t = np.empty((rows, net.n_outputs), dt)
        self.labels = np.empty(rows, np.intp)
        self.Z, self.A, self.D, self.mask, self.delta = [], [], [], [], []
        self.inv_std, self.bn_mean, self.bn_var = [], [], []
        for layer in net.layers:
            shape = (rows, layer.units)
            Z = np.empty(shape, dt)
            self.Z.append(Z)
            # without batch norm the activation runs in place on Z
            self.A.append(np.empty(shape, dt) if layer.batch_norm else Z)
            self.D.append(np.empty(shape, dt) if layer.dropout else None)
            self.mask.append(np.empty(shape, dt) if layer.dropout else None)
            self.delta.append(np.empty(shape, dt))
            bn = layer.batch_norm
            self.inv_std.append(np.empty(layer.units, dt) if bn else None)
            self.bn_mean.append(np.empty(layer.units, dt) if bn else None)
            self.bn_var.append(np.empty(layer.units, dt) if bn else None)
        self.P = np.empty((rows, net.n_outputs), dt)
        self._batches: dict[int, Batch] = {}

    def batch(self, m: int) -> Batch:
        b = self._batches.get(m)
        if b is None:
            if m > self.rows:
                raise ValueError(f"batch of {m} rows exceeds the workspace's {self.rows}")
            b = self._batches[m] = Batch(self, m)
        return b


def zeros_like_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.zeros_like(v) for k, v in params.items()}
