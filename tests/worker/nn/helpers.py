"""Small builders shared by the engine tests."""
from __future__ import annotations

import numpy as np

from worker.nn.model_file import Model, build_meta
from worker.nn.network import LayerSpec, Network


def make_model(hidden: list[LayerSpec], n_in: int, n_out: int, loss: str, output: str, *,
               dtype="float64", seed=0, classes=None) -> Model:
    net = Network(n_in, hidden + [LayerSpec(n_out, output)], loss, dtype)
    rng = np.random.default_rng(seed)
    net.initialize(rng)
    for key, p in net.params.items():
        if key.endswith("bias") or key.endswith("bn_beta"):
            p[...] = rng.normal(0, 0.3, p.shape)
        elif key.endswith("bn_gamma"):
            p[...] = rng.uniform(0.5, 1.5, p.shape)
    for key, p in net.buffers.items():
        p[...] = rng.normal(0, 0.3, p.shape) if key.endswith("mean") else rng.uniform(0.5, 2.0, p.shape)
    if classes is None and loss != "mse":
        classes = list(range(n_out)) if loss == "categorical_crossentropy" else [0, 1]
    meta = build_meta(net, classes=classes, mean=None, std=None, target_ndim=2 if loss == "mse" else 1)
    return Model(net, meta)


def targets_for(loss: str, n: int, n_out: int, rng) -> np.ndarray:
    if loss == "categorical_crossentropy":
        return rng.integers(0, n_out, n)
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, n)
    return rng.normal(0, 1, (n, n_out))
