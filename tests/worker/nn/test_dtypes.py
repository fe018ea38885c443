"""float32 by default, float64 on request, and no silent upcasts anywhere on the way.

Every registered activation, loss, output activation, optimizer, schedule and initializer is
run in both dtypes: the parameters come from the registries (worker/nn/names.py).
"""
import numpy as np
import pytest

from worker.nn import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig, Trainer
from worker.nn.names import (AUTOENCODER_LOSSES, DEFAULT_OUTPUT_ACTIVATION, HIDDEN_ACTIVATIONS, INITIALIZER_NAMES,
                             LOSSES, OPTIMIZER_NAMES, OUTPUT_ACTIVATIONS, REQUIRED_OUTPUT_ACTIVATION, SCHEDULE_NAMES)
from worker.nn.network import zeros_like_params


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 5))  # float64 input: the trainer casts it once
    return X, rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
def test_every_array_keeps_the_configured_dtype(dtype, optimizer):
    X, y = data()
    hidden = [LayerConfig(6, act, dropout=0.1, batch_norm=(i % 2 == 0)) for i, act in enumerate(HIDDEN_ACTIVATIONS)]
    config = TrainConfig(hidden_layers=hidden, epochs=2, batch_size=16, dtype=dtype, l2=1e-3, clip_norm=1.0,
                         optimizer=OptimizerConfig(optimizer, 0.01),
                         early_stopping=EarlyStoppingConfig(patience=5, restore_best_weights=True))
    trainer = Trainer(config, X, y)
    want = np.dtype(dtype)
    assert trainer.data.X.dtype == want and trainer.data.X_val.dtype == want and trainer.data.train.T.dtype == want
    trainer.fit()
    arrays, _ = trainer.state_dict()
    assert all(a.dtype == want for a in arrays.values()), {k: a.dtype for k, a in arrays.items() if a.dtype != want}

    # activations and gradients of one training pass
    net = trainer.network
    ws = net.workspace(16)
    b = ws.batch(16)
    grads = zeros_like_params(net.params)
    x = trainer.data.X[:16]
    t = trainer.data.train.T[:16]
    loss = net.forward(b, x, t, training=True, rng=trainer.rng)
    net.backward(b, x, t, grads)
    assert np.isfinite(loss)
    buffers = b.Z + b.A + [d for d in b.D if d is not None] + [m for m in b.mask if m is not None] + b.delta + [b.P]
    assert all(buf.dtype == want for buf in buffers)
    assert all(g.dtype == want for g in grads.values())

    model = trainer.model
    assert model.predict_proba(X).dtype == want
    loss, model_grads = model.loss_and_gradients(X, y)
    assert all(g.dtype == want for g in model_grads.values())


def test_the_trainer_does_not_copy_a_ready_float32_dataset():
    X = np.random.default_rng(0).normal(0, 1, (64, 4)).astype(np.float32)
    y = np.arange(64) % 2
    trainer = Trainer(TrainConfig(validation_split=0.0, standardize=False, epochs=1), X, y)
    assert np.shares_memory(trainer.data.X, X)
    trainer.fit()
    assert np.array_equal(trainer.data.X, X)  # and never writes to it


def assert_dtype_kept(trainer: Trainer, X, want):
    trainer.fit()
    arrays, _ = trainer.state_dict()
    assert all(a.dtype == want for a in arrays.values()), {k: a.dtype for k, a in arrays.items() if a.dtype != want}
    out = trainer.model.predict_proba(X) if trainer.model.is_classifier else trainer.model.predict(X)
    assert out.dtype == want


LOSS_OUTPUTS = [(loss, output) for loss in LOSSES
                for output in ([REQUIRED_OUTPUT_ACTIVATION[loss]] if loss in REQUIRED_OUTPUT_ACTIVATION
                               else OUTPUT_ACTIVATIONS)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss, output", LOSS_OUTPUTS)
def test_every_loss_and_output_activation_keeps_the_dtype(dtype, loss, output):
    X, y = data()
    y = {"binary_crossentropy": y % 2, "mse": X[:, :2] * 0.5}.get(loss, y)
    config = TrainConfig(hidden_layers=[LayerConfig(6, "tanh")], loss=loss, output_activation=output, epochs=2,
                         batch_size=16, dtype=dtype)
    assert_dtype_kept(Trainer(config, X, y), X, np.dtype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
@pytest.mark.parametrize("init", INITIALIZER_NAMES)
def test_every_schedule_and_initializer_keeps_the_dtype(dtype, schedule, init):
    X, y = data()
    config = TrainConfig(hidden_layers=[LayerConfig(6, "relu")], epochs=3, batch_size=16, dtype=dtype, init=init,
                         lr_schedule=ScheduleConfig(schedule, step_size=1, patience=0))
    assert_dtype_kept(Trainer(config, X, y), X, np.dtype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", AUTOENCODER_LOSSES)
def test_autoencoders_and_frozen_layers_keep_the_dtype(dtype, loss):
    X = np.random.default_rng(3).uniform(0, 1, (80, 6))
    config = TrainConfig(task="autoencoder", loss=loss, output_activation=DEFAULT_OUTPUT_ACTIVATION[loss],
                         hidden_layers=[LayerConfig(5, "relu", batch_norm=True), LayerConfig(3, "tanh")],
                         epochs=2, batch_size=16, dtype=dtype, freeze=[0])
    trainer = Trainer(config, X)
    assert_dtype_kept(trainer, X, np.dtype(dtype))
    assert trainer.model.encoder().predict(X).dtype == np.dtype(dtype)
