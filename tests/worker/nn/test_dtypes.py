"""float32 by default, float64 on request, and no silent upcasts anywhere on the way."""
import numpy as np
import pytest

from worker.nn import EarlyStoppingConfig, LayerConfig, OptimizerConfig, TrainConfig, Trainer
from worker.nn.config import HIDDEN_ACTIVATIONS
from worker.nn.network import zeros_like_params


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 5))  # float64 input: the trainer casts it once
    return X, rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "rmsprop", "adamw"])
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
