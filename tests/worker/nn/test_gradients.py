"""Analytic gradients against central finite differences in float64.

Every registered activation, loss and output activation is checked: the parameters come from the
registries (worker/nn/names.py), so a newly registered name is gradient-checked without an edit here.
"""
import numpy as np
import pytest

from worker.nn.names import DEFAULT_OUTPUT_ACTIVATION, HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS
from worker.nn.network import LayerSpec, Network, zeros_like_params

from .helpers import make_model, targets_for

STEP = 1e-6
TOLERANCE = 1e-6


def numeric_gradients(model, X, y, training):
    params = model.network.params
    numeric = {}
    for key, p in params.items():
        g = np.zeros_like(p)
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            saved = flat[j]
            flat[j] = saved + STEP
            up, _ = model.loss_and_gradients(X, y, training=training)
            flat[j] = saved - STEP
            down, _ = model.loss_and_gradients(X, y, training=training)
            flat[j] = saved
            gflat[j] = (up - down) / (2 * STEP)
        numeric[key] = g
    return numeric


def assert_gradients_match(model, X, y, training):
    loss, analytic = model.loss_and_gradients(X, y, training=training)
    assert np.isfinite(loss)
    assert set(analytic) == set(model.network.params)
    numeric = numeric_gradients(model, X, y, training)
    assert_close(analytic, numeric)


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_every_hidden_activation_with_every_loss(activation, loss, batch_norm):
    rng = np.random.default_rng(1)
    n_out = 1 if loss == "binary_crossentropy" else 3
    hidden = [LayerSpec(5, activation, batch_norm=batch_norm), LayerSpec(4, activation, batch_norm=batch_norm)]
    model = make_model(hidden, 3, n_out, loss, DEFAULT_OUTPUT_ACTIVATION[loss])
    X = rng.normal(0, 1, (7, 3))
    y = targets_for(loss, 7, n_out, rng)
    assert_gradients_match(model, X, y, training=batch_norm)


@pytest.mark.parametrize("output", OUTPUT_ACTIVATIONS)
def test_every_output_activation_with_mse(output):
    rng = np.random.default_rng(2)
    model = make_model([LayerSpec(6, "tanh")], 3, 3, "mse", output)
    X = rng.normal(0, 1, (8, 3))
    y = targets_for("mse", 8, 3, rng)
    assert_gradients_match(model, X, y, training=False)


def test_binary_crossentropy_over_many_units():
    """The autoencoder's output: one sigmoid per input feature, targets in [0, 1]."""
    rng = np.random.default_rng(6)
    net = Network(4, [LayerSpec(3, "tanh"), LayerSpec(4, "sigmoid")], "binary_crossentropy", "float64")
    net.initialize(rng)
    X = rng.uniform(0, 1, (7, 4))
    assert_network_gradients_match(net, X, X)


@pytest.mark.parametrize("frozen", [[0], [1], [0, 2], [0, 1, 2]], ids=str)
def test_frozen_layers_leave_the_trainable_gradients_exact(frozen):
    """Backward with frozen layers (batch norm on running statistics there, batch statistics in
    the trainable ones) gives the finite-difference gradients of the trainable parameters."""
    rng = np.random.default_rng(7)
    hidden = [LayerSpec(5, "tanh", batch_norm=True), LayerSpec(4, "elu", batch_norm=True), LayerSpec(4, "sigmoid")]
    net = Network(3, hidden + [LayerSpec(3, "softmax")], "categorical_crossentropy", "float64")
    net.initialize(rng)
    for key, buf in net.buffers.items():
        buf[...] = rng.normal(0, 0.3, buf.shape) if key.endswith("mean") else rng.uniform(0.5, 2.0, buf.shape)
    net.freeze(frozen)
    assert not any(key.startswith(tuple(f"layers.{i}." for i in frozen)) for key in net.trainable_params)
    X = rng.normal(0, 1, (6, 3))
    T = np.eye(3)[rng.integers(0, 3, 6)]
    assert_network_gradients_match(net, X, T)


def assert_network_gradients_match(net, X, T):
    """Training-mode forward without dropout: analytic gradients of `trainable_params` against
    central differences (running statistics restored around each forward)."""
    saved = {k: v.copy() for k, v in net.buffers.items()}
    b = net.workspace(X.shape[0]).batch(X.shape[0])

    def loss():
        value = net.forward(b, X, T, training=True, rng=None) / X.shape[0]
        for k, v in saved.items():
            np.copyto(net.buffers[k], v)
        return value

    loss()
    analytic = zeros_like_params(net.trainable_params)
    net.backward(b, X, T, analytic)
    numeric = {}
    for key, p in net.trainable_params.items():
        numeric[key] = g = np.zeros_like(p)
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            kept = flat[j]
            flat[j] = kept + STEP
            up = loss()
            flat[j] = kept - STEP
            down = loss()
            flat[j] = kept
            gflat[j] = (up - down) / (2 * STEP)
    assert_close(analytic, numeric)


def assert_close(analytic, numeric):
    a = np.concatenate([analytic[k].ravel() for k in sorted(analytic)])
    n = np.concatenate([numeric[k].ravel() for k in sorted(analytic)])
    assert np.linalg.norm(a) > 1e-4  # a vanishing gradient would make the check vacuous
    overall = np.linalg.norm(a - n) / (np.linalg.norm(a) + np.linalg.norm(n))
    assert overall < TOLERANCE, overall
    scale = np.linalg.norm(a)
    for key in analytic:
        ak, nk = analytic[key], numeric[key]
        # per array too, relative where the array's gradient is not negligible (biases under
        # batch norm have an exactly zero gradient)
        denom = max(np.linalg.norm(ak) + np.linalg.norm(nk), 1e-3 * scale)
        assert np.linalg.norm(ak - nk) / denom < TOLERANCE, key


def test_batch_norm_with_running_statistics():
    rng = np.random.default_rng(3)
    model = make_model([LayerSpec(5, "elu", batch_norm=True)], 4, 3, "categorical_crossentropy", "softmax")
    X = rng.normal(0, 1, (6, 4))
    assert_gradients_match(model, X, rng.integers(0, 3, 6), training=False)


def test_gradient_check_is_not_vacuous():
    """A wrong derivative must fail the same check."""
    from worker.nn import activations

    rng = np.random.default_rng(4)
    model = make_model([LayerSpec(5, "tanh")], 3, 2, "mse", "linear")
    X, y = rng.normal(0, 1, (6, 3)), rng.normal(0, 1, (6, 2))
    original = activations.DERIVATIVES["tanh"]
    activations.DERIVATIVES["tanh"] = lambda A, delta: None  # pretend tanh' = 1
    try:
        with pytest.raises(AssertionError):
            assert_gradients_match(model, X, y, training=False)
    finally:
        activations.DERIVATIVES["tanh"] = original


def test_loss_values_are_the_textbook_ones():
    rng = np.random.default_rng(5)
    X = rng.normal(0, 1, (5, 3))
    ce = make_model([LayerSpec(4, "relu")], 3, 3, "categorical_crossentropy", "softmax")
    y = np.array([0, 2, 1, 1, 0])
    loss, _ = ce.loss_and_gradients(X, y)
    p = ce.predict_proba(X)
    assert loss == pytest.approx(-np.log(p[np.arange(5), y]).mean(), rel=1e-12)
    bce = make_model([LayerSpec(4, "relu")], 3, 1, "binary_crossentropy", "sigmoid")
    yb = np.array([0, 1, 1, 0, 1])
    loss, _ = bce.loss_and_gradients(X, yb)
    q = bce.predict_proba(X)[:, 1]
    assert loss == pytest.approx(-(yb * np.log(q) + (1 - yb) * np.log(1 - q)).mean(), rel=1e-12)
    mse = make_model([LayerSpec(4, "relu")], 3, 2, "mse", "linear")
    yr = rng.normal(0, 1, (5, 2))
    loss, _ = mse.loss_and_gradients(X, yr)
    assert loss == pytest.approx(((mse.predict(X) - yr) ** 2).mean(), rel=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    model = make_model([], 2, 3, "categorical_crossentropy", "softmax")
    model.network.params["layers.0.weight"][...] = [[1e4, -1e4, 0], [0, 0, 0]]
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    loss, grads = model.loss_and_gradients(X, np.array([1, 1]))
    assert np.isfinite(loss) and loss > 1e3  # sample 0 is 2e4 nats wrong, sample 1 is right
    assert all(np.isfinite(g).all() for g in grads.values())
