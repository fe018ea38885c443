"""Activation functions, each forward beside its backward.

Forwards work in place on the pre-activation `Z` and return it. Backwards take the forward's
*output* `A` and multiply `delta` (dL/dA) in place into dL/dZ, so no pre-activation needs keeping.
Every activation here has a derivative expressible from its output (elu with alpha = 1).
"""
from __future__ import annotations

import numpy as np

LEAKY_RELU_SLOPE = 0.01


def inplace_sigmoid(Z):
    # 1 / (1 + exp(-z)) overflows for very negative z in float32; tanh form is stable everywhere.
    Z *= 0.5
    np.tanh(Z, out=Z)
    Z += 1.0
    Z *= 0.5
    return Z


def inplace_sigmoid_derivative(A, delta):
    delta *= A
    delta *= 1.0 - A


def inplace_tanh(Z):
    return np.tanh(Z, out=Z)


def inplace_tanh_derivative(A, delta):
    delta *= 1.0 - A * A


def inplace_relu(Z):
    return np.maximum(Z, 0, out=Z)


def inplace_relu_derivative(A, delta):
    # multiplying by the boolean mask is several times faster than copyto(..., where=)
    np.multiply(delta, A > 0, out=delta)


def inplace_leaky_relu(Z):
    # for slope < 1, max(z, slope * z) is z for z > 0 and slope * z otherwise
    return np.maximum(Z, Z * LEAKY_RELU_SLOPE, out=Z)


def inplace_leaky_relu_derivative(A, delta):
    scale = (A > 0).astype(delta.dtype)  # 1 where positive, slope elsewhere
    scale *= 1.0 - LEAKY_RELU_SLOPE
    scale += LEAKY_RELU_SLOPE
    delta *= scale


def inplace_elu(Z):
    negative = Z < 0
    np.expm1(Z, out=Z, where=negative)
    return Z


def inplace_elu_derivative(A, delta):
    # for z < 0, d/dz (exp(z) - 1) = exp(z) = A + 1
    scale = np.minimum(A, 0)
    scale += 1.0
    delta *= scale


def inplace_linear(Z):
    return Z


def inplace_linear_derivative(A, delta):
    return None


def inplace_softmax(Z):
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def inplace_softmax_derivative(A, delta):
    # Jacobian-vector product: dz_j = a_j * (g_j - sum_k g_k a_k)
    inner = np.einsum("ij,ij->i", delta, A)
    delta -= inner[:, None]
    delta *= A


ACTIVATIONS = {
    "sigmoid": inplace_sigmoid,
    "tanh": inplace_tanh,
    "relu": inplace_relu,
    "leaky_relu": inplace_leaky_relu,
    "elu": inplace_elu,
    "linear": inplace_linear,
    "softmax": inplace_softmax,
}

DERIVATIVES = {
    "sigmoid": inplace_sigmoid_derivative,
    "tanh": inplace_tanh_derivative,
    "relu": inplace_relu_derivative,
    "leaky_relu": inplace_leaky_relu_derivative,
    "elu": inplace_elu_derivative,
    "linear": inplace_linear_derivative,
    "softmax": inplace_softmax_derivative,
}

OUTPUT_ONLY_ACTIVATIONS = ("softmax",)  # normalizes across units: for the output layer only
RELU_FAMILY = ("relu", "leaky_relu", "elu")
