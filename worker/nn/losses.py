"""Loss functions with their output-layer gradients.

Each loss turns the output layer's pre-activation `Z` into predictions `P` (writing `P`) and
returns the *sum over samples* of the per-sample loss, so batch sums add up exactly; `delta`
writes dL/dZ of the *mean* loss over the `m` rows. Cross-entropies are computed from the logits
(log-sum-exp, softplus), which is stable without clipping; the gradient of softmax + CE and of
sigmoid + BCE is the fused `(P - T) / m`.

Each loss names the output activation it needs (None: any), the one a run gets by default, the
task it implies when none is given, and whether it may reconstruct inputs (autoencoders).
"""
from __future__ import annotations

import numpy as np

from .activations import ACTIVATIONS, DERIVATIVES
from .metrics import TASKS


class SoftmaxCrossEntropy:
    """Categorical cross-entropy on a softmax output; targets are rows of class probabilities."""

    name = "categorical_crossentropy"
    output_activation = "softmax"
    default_output_activation = "softmax"
    task = "classification"
    reconstructs = False

    def forward(self, Z, T, P):
        Z -= np.maximum.reduce(Z, axis=1, keepdims=True)  # Z now holds shifted logits
        np.exp(Z, out=P)
        sums = np.add.reduce(P, axis=1)
        P /= sums[:, None]
        # -sum_k t_k log p_k = log(sum exp z) - sum_k t_k z_k   (rows of T sum to 1)
        return float(np.log(sums).sum() - np.vdot(T, Z))

    def delta(self, P, T, out):
        np.subtract(P, T, out=out)
        out *= 1.0 / P.shape[0]


class SigmoidBinaryCrossEntropy:
    """Binary cross-entropy on sigmoid outputs, averaged over output units."""

    name = "binary_crossentropy"
    output_activation = "sigmoid"
    default_output_activation = "sigmoid"
    task = "classification"
    reconstructs = True  # inputs in [0, 1]

    def forward(self, Z, T, P):
        # softplus(z) - t z = max(z, 0) - t z + log1p(exp(-|z|))
        per_element = np.maximum(Z, 0) - T * Z + np.log1p(np.exp(-np.abs(Z)))
        np.copyto(P, Z)
        ACTIVATIONS["sigmoid"](P)
        return float(per_element.sum()) / Z.shape[1]

    def delta(self, P, T, out):
        np.subtract(P, T, out=out)
        out *= 1.0 / (P.shape[0] * P.shape[1])


class MeanSquaredError:
    """Mean squared error averaged over output units (Keras's `mse`); any output activation."""

    name = "mse"
    output_activation = None
    default_output_activation = "linear"
    task = "regression"
    reconstructs = True

    def __init__(self, activation: str = "linear"):
        self.activation = activation
        self._forward = ACTIVATIONS[activation]
        self._derivative = DERIVATIVES[activation]

    def forward(self, Z, T, P):
        np.copyto(P, Z)
        self._forward(P)
        diff = P - T
        return float(np.vdot(diff, diff)) / Z.shape[1]

    def delta(self, P, T, out):
        np.subtract(P, T, out=out)
        out *= 2.0 / (P.shape[0] * P.shape[1])
        self._derivative(P, out)


LOSS_FUNCTIONS = {
    "mse": MeanSquaredError,
    "binary_crossentropy": SigmoidBinaryCrossEntropy,
    "categorical_crossentropy": SoftmaxCrossEntropy,
}


def task_of(config) -> str:
    """The run's task: `config.task` if given (checked against the loss), else the loss's own."""
    if config.loss not in LOSS_FUNCTIONS:
        raise ValueError(f"loss: unknown {config.loss!r}; choose from {sorted(LOSS_FUNCTIONS)}")
    loss = LOSS_FUNCTIONS[config.loss]
    task = config.task or loss.task
    if task not in TASKS:
        raise ValueError(f"task: unknown {task!r}; choose from {list(TASKS)}")
    if task == "autoencoder":
        if not loss.reconstructs:
            reconstructing = [name for name, cls in LOSS_FUNCTIONS.items() if cls.reconstructs]
            raise ValueError(f"loss: an autoencoder reconstructs its input with {' or '.join(reconstructing)}, "
                             f"not {config.loss}")
    elif task != loss.task:
        raise ValueError(f"task: {config.loss} is a {loss.task} loss, not one for {task!r}")
    return task


def make_loss(name: str, output_activation: str):
    """The loss object for `name`; refuses output activations the loss cannot use."""
    if name not in LOSS_FUNCTIONS:
        raise ValueError(f"loss: unknown {name!r}; choose from {sorted(LOSS_FUNCTIONS)}")
    if name == "mse":
        if output_activation not in ACTIVATIONS:
            raise ValueError(f"output_activation: unknown {output_activation!r}")
        return MeanSquaredError(output_activation)
    loss = LOSS_FUNCTIONS[name]()
    if output_activation != loss.output_activation:
        raise ValueError(
            f"output_activation: {name} needs a {loss.output_activation} output, not {output_activation!r}")
    return loss
