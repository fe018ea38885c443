"""Plain training configuration for the engine.

Dataclasses only: the engine takes these (or anything with the same fields) and arrays, and
knows nothing of jobs, HTTP or databases. Defaults follow Keras where Keras has the concept.
The names a field accepts come from the engine's registries (worker/nn/names.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerConfig:
    units: int
    activation: str = "relu"
    dropout: float = 0.0  # inverted dropout on this layer's output, training only
    batch_norm: bool = False  # before the activation; running statistics at inference


@dataclass
class OptimizerConfig:
    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # momentum, nesterov
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw
    epsilon: float = 1e-8  # adam, adamw, rmsprop
    rho: float = 0.9  # rmsprop
    weight_decay: float = 0.01  # adamw, decoupled


@dataclass
class ScheduleConfig:
    name: str = "constant"
    step_size: int = 10  # step: lr0 * gamma ** (epochs_done // step_size)
    gamma: float = 0.1  # step and exponential (lr0 * gamma ** epochs_done)
    t_max: int | None = None  # cosine: epochs of the half cosine; None means all epochs
    min_lr: float = 0.0  # cosine floor; reduce_on_plateau floor
    # reduce_on_plateau, Keras's ReduceLROnPlateau semantics and defaults
    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 10
    min_delta: float = 1e-4
    cooldown: int = 0
    mode: str = "auto"


@dataclass
class EarlyStoppingConfig:
    """Keras's EarlyStopping, argument for argument."""

    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: int = 0
    mode: str = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = 0


@dataclass
class TrainConfig:
    hidden_layers: list[LayerConfig] = field(default_factory=lambda: [LayerConfig(64)])
    output_activation: str = "softmax"
    loss: str = "categorical_crossentropy"  # mse means regression; the others classification
    init: str | None = None  # None: he_normal for relu-family layers, xavier_uniform otherwise
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    epochs: int = 20
    batch_size: int = 32
    seed: int = 0
    l2: float = 0.0  # 0.5 * l2 * sum(W**2) over weights (not biases), added to the loss
    clip_norm: float | None = None  # clip gradients by their global norm
    lr_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig | None = None
    validation_split: float = 0.2  # used only when no validation set is given; stratified for classification
    standardize: bool = True  # inputs: (X - mean) / std from the training part, stored in the model
    dtype: str = "float32"  # or "float64"
    # None: classification for the cross-entropies, regression for mse; "autoencoder": the
    # target is the input (mse: the standardized input; binary_crossentropy: raw inputs in [0, 1])
    task: str | None = None
    # hidden layers (0-based) held fixed: no gradient step, no optimizer state, batch norm on its
    # running statistics; backpropagation stops at the lowest trainable layer
    freeze: list[int] = field(default_factory=list)
