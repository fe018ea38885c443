"""Weight initializers: he (relu family) and xavier/glorot (the rest), normal and uniform."""
from __future__ import annotations

import math

from .activations import RELU_FAMILY


def he_normal(rng, fan_in, fan_out, dtype):
    return (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(rng, fan_in, fan_out, dtype):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype)


def xavier_normal(rng, fan_in, fan_out, dtype):
    return (rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def xavier_uniform(rng, fan_in, fan_out, dtype):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype)


INITIALIZERS = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
}


def default_initializer(activation: str) -> str:
    return "he_normal" if activation in RELU_FAMILY else "xavier_uniform"
