"""Transfer learning: start hidden layers from a trained network's arrays, with its input scaling.

A `Transfer` names, per hidden layer index, the arrays that layer starts from (`weight`, `bias`,
and for batch-norm layers `bn_gamma`, `bn_beta`, `bn_mean`, `bn_var`), and optionally the input
standardization (mean, std) to use instead of the new data's. The Trainer copies them over its
freshly initialized network (the output layer always stays fresh); `TrainConfig.freeze` holds
layers fixed. Shapes are checked layer by layer, from arrays or from a model file's meta alone
(`layer_shapes_from_meta`, for checking a request before any training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

DENSE_ARRAYS = ("weight", "bias")
BATCH_NORM_ARRAYS = ("bn_gamma", "bn_beta", "bn_mean", "bn_var")


@dataclass
class Transfer:
    layers: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    mean: np.ndarray | None = None  # both or neither: the source's input standardization
    std: np.ndarray | None = None

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("transfer: give both mean and std, or neither")

    def __repr__(self):
        return f"Transfer(layers={sorted(self.layers)}, standardization={self.mean is not None})"

    @classmethod
    def from_model(cls, model, layers: Iterable[int], *, standardization: bool = True) -> "Transfer":
        """Hidden `layers` of a trained `Model` (copies of its arrays), and its input
        standardization (None when it had none, or with standardization=False)."""
        arrays = model.network.state_arrays()
        n_hidden = len(model.meta["layers"]) - (0 if model.network.loss is None else 1)
        picked = {}
        for i in layers:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_hidden:
                raise ValueError(f"transfer: layer {i!r} is not a hidden layer of the source (it has {n_hidden})")
            picked[i] = {name: arrays[f"layers.{i}.{name}"].copy()
                         for name in DENSE_ARRAYS + BATCH_NORM_ARRAYS if f"layers.{i}.{name}" in arrays}
        pre = model.meta["preprocessing"]
        if standardization and pre["standardize"]:
            dtype = model.network.dtype
            return cls(picked, np.asarray(pre["mean"], dtype), np.asarray(pre["std"], dtype))
        return cls(picked)

    @property
    def standardization(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.mean is None else (self.mean, self.std)

    def shapes(self) -> dict[int, dict[str, tuple[int, ...]]]:
        return {i: {name: np.shape(a) for name, a in arrays.items()} for i, arrays in self.layers.items()}

    def apply(self, network) -> None:
        """Copy the arrays into `network` (after its initialization); ValueError naming the layer
        when a shape, a batch-norm array or a value does not fit."""
        n_hidden = len(network.layers) - (0 if network.loss is None else 1)
        check_layer_shapes(self.shapes(), network.n_inputs,
                           [(la.units, la.batch_norm) for la in network.layers[:n_hidden]])
        targets = network.state_arrays()
        for i, arrays in sorted(self.layers.items()):
            for name, value in arrays.items():
                value = np.asarray(value)
                if value.dtype.kind != "f" or not np.isfinite(value).all():
                    raise ValueError(f"transfer: layer {i}: {name} must be finite floats")
                np.copyto(targets[f"layers.{i}.{name}"], value)


def layer_shapes_from_meta(meta: Mapping, layers: Iterable[int]) -> dict[int, dict[str, tuple[int, ...]]]:
    """The shapes `Transfer.from_model(model, layers)` would carry, from a model file's meta."""
    specs = meta["layers"]
    n_hidden = len(specs) - (0 if meta.get("loss") is None else 1)
    shapes = {}
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_hidden:
            raise ValueError(f"transfer: layer {i!r} is not a hidden layer of the source (it has {n_hidden})")
        fan_in = meta["input_size"] if i == 0 else specs[i - 1]["units"]
        units = specs[i]["units"]
        shapes[i] = {"weight": (fan_in, units), "bias": (units,)}
        if specs[i]["batch_norm"]:
            shapes[i].update({name: (units,) for name in BATCH_NORM_ARRAYS})
    return shapes


def check_layer_shapes(shapes: Mapping[int, Mapping[str, tuple]], n_inputs: int,
                       hidden: Sequence[tuple[int, bool]]) -> None:
    """Raise ValueError naming the first layer whose arrays do not fit a network of `n_inputs`
    inputs and hidden layers `hidden` ((units, batch_norm) each)."""
    for i in sorted(shapes):
        arrays = shapes[i]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(hidden):
            raise ValueError(f"transfer: layer {i!r} is not a hidden layer of this network (it has {len(hidden)})")
        units, batch_norm = hidden[i]
        fan_in = n_inputs if i == 0 else hidden[i - 1][0]
        wanted = {"weight": (fan_in, units), "bias": (units,)}
        if batch_norm:
            wanted.update({name: (units,) for name in BATCH_NORM_ARRAYS})
        unknown = sorted(set(arrays) - set(DENSE_ARRAYS + BATCH_NORM_ARRAYS))
        if unknown:
            raise ValueError(f"transfer: layer {i}: unknown arrays {unknown}")
        has_bn = any(name in arrays for name in BATCH_NORM_ARRAYS)
        if has_bn and not batch_norm:
            raise ValueError(f"transfer: layer {i}: the source has batch norm, this layer has none")
        if batch_norm and not has_bn:
            raise ValueError(f"transfer: layer {i}: this layer has batch norm, the source has none")
        missing = sorted(set(wanted) - set(arrays))
        if missing:
            raise ValueError(f"transfer: layer {i}: missing arrays {missing}")
        for name, shape in wanted.items():
            if tuple(arrays[name]) != shape:
                raise ValueError(f"transfer: layer {i}: {name} is {tuple(arrays[name])}, this network's layer {i} "
                                 f"needs {shape}")
