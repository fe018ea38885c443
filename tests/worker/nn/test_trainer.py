"""Trainer behaviour: metrics, callbacks, stop reasons, divergence, best weights, bad input."""
import math

import numpy as np
import pytest

from worker.nn import (EarlyStoppingConfig, EpochEnd, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig,
                       Trainer)
from worker.nn.callbacks import METRIC_NAMES


def blobs(n=300, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, 5))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(0, 1.5, (n, 5))).astype(np.float32), y


def regression(n=200, seed=0, scale=10.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 4))
    return X, X @ rng.normal(0, 1, 4) * scale


def test_classification_metrics_are_reported_each_epoch_1_based():
    X, y = blobs()
    events: list[EpochEnd] = []
    trainer = Trainer(TrainConfig(epochs=3, batch_size=50), X, y)
    result = trainer.fit(on_epoch_end=events.append)
    assert [e.epoch for e in events] == [1, 2, 3] and trainer.epoch == 3
    for e in events:
        assert set(e.metrics) == set(METRIC_NAMES)
        assert e.metrics["val_r2"] is None and e.metrics["val_mae"] is None
        assert 0 <= e.metrics["train_accuracy"] <= 1 and 0 <= e.metrics["val_accuracy"] <= 1
        assert e.metrics["lr"] == 1e-3 and e.metrics["seconds"] >= 0
        assert e.trainer is trainer
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[0] == {"epoch": 1, **events[0].metrics}
    assert (result.stop_reason, result.epochs_run, result.stopped_epoch) == ("completed", 3, None)


def test_is_best_follows_val_loss_without_early_stopping():
    X, y = blobs(seed=1)
    events = []
    Trainer(TrainConfig(epochs=8, batch_size=30, optimizer=OptimizerConfig("sgd", 0.5)), X, y).fit(events.append)
    best = math.inf
    for e in events:
        assert e.is_best == (e.metrics["val_loss"] < best)
        best = min(best, e.metrics["val_loss"])


def test_seconds_come_from_the_injected_clock():
    X, y = blobs()
    ticks = iter(range(0, 1000, 5))
    result = Trainer(TrainConfig(epochs=2), X, y, clock=lambda: next(ticks)).fit()
    assert [h["seconds"] for h in result.history] == [5, 5]


def test_on_epoch_end_can_stop_with_its_own_reason():
    X, y = blobs()
    result = Trainer(TrainConfig(epochs=10), X, y).fit(on_epoch_end=lambda e: "max_runtime" if e.epoch == 2 else None)
    assert (result.stop_reason, result.epochs_run, result.stopped_epoch, len(result.history)) == \
        ("max_runtime", 2, 2, 2)


def test_should_stop_is_asked_between_batches_and_stops_at_once():
    X, y = blobs(n=300)
    calls = []
    trainer = Trainer(TrainConfig(epochs=5, batch_size=40, validation_split=0.2), X, y)  # 240 rows: 6 batches
    result = trainer.fit(should_stop=lambda: calls.append(1) or ("cancelled" if len(calls) == 8 else None))
    assert len(calls) == 8
    assert (result.stop_reason, result.epochs_run, result.stopped_epoch) == ("cancelled", 1, 2)
    assert len(result.history) == 1


def test_regression_reports_r2_and_mae_and_no_accuracy():
    X, y = regression()
    result = Trainer(TrainConfig(loss="mse", output_activation="linear", epochs=3, hidden_layers=[LayerConfig(8)]),
                     X, y).fit()
    last = result.history[-1]
    assert last["train_accuracy"] is None and last["val_accuracy"] is None
    assert last["val_r2"] is not None and last["val_mae"] > 0


def test_divergence_stops_with_the_last_finite_weights_and_never_raises():
    X, y = regression()
    # the rate doubles every epoch, so training diverges after a few finite epochs whatever the
    # BLAS's rounding (a fixed rate near the edge of stability diverged, or not, by build)
    config = TrainConfig(hidden_layers=[LayerConfig(16, "relu")], output_activation="linear", loss="mse",
                         optimizer=OptimizerConfig("sgd", 0.01), lr_schedule=ScheduleConfig("exponential", gamma=2.0),
                         epochs=30, batch_size=20)
    trainer = Trainer(config, X, y)
    kept = {}

    def remember(event):
        kept.clear()
        kept.update({k: v.copy() for k, v in event.trainer.network.state_arrays().items()})
    result = trainer.fit(on_epoch_end=remember)
    assert result.stop_reason == "diverged"
    assert result.stopped_epoch == result.epochs_run + 1 and result.epochs_run >= 1
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    for key, value in trainer.network.state_arrays().items():
        assert np.isfinite(value).all()
        assert np.array_equal(value, kept[key]), key
    assert np.isfinite(trainer.model.predict(X)).all()


def test_divergence_in_the_first_epoch_keeps_the_initial_weights():
    X, y = regression(scale=1000.0)
    config = TrainConfig(hidden_layers=[LayerConfig(16, "relu")], output_activation="linear", loss="mse",
                         optimizer=OptimizerConfig("sgd", 1.0), epochs=5, batch_size=20, seed=3)
    initial = {k: v.copy() for k, v in Trainer(config, X, y).network.state_arrays().items()}
    trainer = Trainer(config, X, y)
    result = trainer.fit()
    assert (result.stop_reason, result.epochs_run, result.stopped_epoch, result.history) == ("diverged", 0, 1, [])
    for key, value in trainer.network.state_arrays().items():
        assert np.array_equal(value, initial[key])


def noisy_labels(n=120, seed=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 5)).astype(np.float32)
    return X, (X[:, 0] + rng.normal(0, 1, n) > 0).astype(int)


def test_restore_best_weights_applies_even_when_stopping_never_fired():
    X, y = noisy_labels()  # noisy enough that the last epoch is not the best
    config = TrainConfig(hidden_layers=[LayerConfig(64)], epochs=25, batch_size=8, seed=0,
                         optimizer=OptimizerConfig("sgd", 0.3), validation_split=0.3,
                         early_stopping=EarlyStoppingConfig(patience=100, restore_best_weights=True))
    weights = {}
    trainer = Trainer(config, X, y)
    result = trainer.fit(on_epoch_end=lambda e: weights.__setitem__(
        e.epoch, {k: v.copy() for k, v in e.trainer.network.state_arrays().items()}))
    assert result.stop_reason == "completed" and result.epochs_run == 25
    assert result.best_epoch != 25  # otherwise this test would not tell restoring from not
    best_loss = min(h["val_loss"] for h in result.history)
    assert result.best_metrics["val_loss"] == best_loss == result.history[result.best_epoch - 1]["val_loss"]
    for key, value in trainer.model.network.state_arrays().items():
        assert np.array_equal(value, weights[result.best_epoch][key]), key


def test_early_stopping_ends_training_with_best_and_stopped_epoch():
    X, y = blobs(n=120, seed=4)
    config = TrainConfig(hidden_layers=[LayerConfig(64)], epochs=200, batch_size=8, seed=0,
                         optimizer=OptimizerConfig("sgd", 0.3), validation_split=0.3,
                         early_stopping=EarlyStoppingConfig(patience=3))
    events = []
    result = Trainer(config, X, y).fit(on_epoch_end=events.append)
    assert result.stop_reason == "early_stopped"
    assert result.stopped_epoch == result.epochs_run == result.best_epoch + 3 < 200
    assert events[-1].epoch == result.stopped_epoch  # the last epoch is still reported
    assert [e.epoch for e in events if e.is_best][-1] == result.best_epoch


def test_learning_rate_schedule_drives_the_reported_lr():
    X, y = blobs()
    config = TrainConfig(epochs=5, optimizer=OptimizerConfig("momentum", 0.1),
                         lr_schedule=ScheduleConfig("step", step_size=2, gamma=0.5))
    result = Trainer(config, X, y).fit()
    assert [h["lr"] for h in result.history] == [0.1, 0.1, 0.05, 0.05, 0.025]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_every_optimizer_lowers_the_loss(optimizer):
    X, y = blobs(seed=5)
    lr = 0.05 if optimizer in ("sgd", "momentum", "nesterov") else 0.005
    result = Trainer(TrainConfig(epochs=6, optimizer=OptimizerConfig(optimizer, lr), l2=1e-3, clip_norm=1.0),
                     X, y).fit()
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("field, config, match", [
    ("batch_size", TrainConfig(batch_size=0), "batch_size"),
    ("dtype", TrainConfig(dtype="float16"), "dtype"),
    ("loss", TrainConfig(loss="hinge"), "loss"),
    ("output", TrainConfig(output_activation="sigmoid"), "output_activation"),
    ("activation", TrainConfig(hidden_layers=[LayerConfig(4, "swish")]), r"layers\[0\].activation"),
    ("units", TrainConfig(hidden_layers=[LayerConfig(0)]), r"layers\[0\].units"),
    ("dropout", TrainConfig(hidden_layers=[LayerConfig(4, dropout=1.0)]), r"layers\[0\].dropout"),
    ("optimizer", TrainConfig(optimizer=OptimizerConfig("lbfgs")), "optimizer.name"),
    ("init", TrainConfig(init="zeros"), "init"),
    ("monitor", TrainConfig(validation_split=0.0, early_stopping=EarlyStoppingConfig()), "early_stopping.monitor"),
    ("r2 for classes", TrainConfig(early_stopping=EarlyStoppingConfig(monitor="val_r2")), "early_stopping.monitor"),
])
def test_bad_configuration_names_the_field(field, config, match):
    X, y = blobs(n=40)
    with pytest.raises(ValueError, match=match):
        Trainer(config, X, y)


def test_bad_arrays_name_the_argument():
    X, y = blobs(n=40)
    with pytest.raises(ValueError, match="X: contains NaN"):
        Trainer(TrainConfig(), np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="y: has 39 rows"):
        Trainer(TrainConfig(), X, y[:39])
    with pytest.raises(ValueError, match="X_val: has 4 features"):
        Trainer(TrainConfig(), X, y, X[:, :4], y)
    with pytest.raises(ValueError, match="y_val: label 7"):
        Trainer(TrainConfig(), X, y, X, np.full(40, 7))
    with pytest.raises(ValueError, match="binary_crossentropy needs exactly 2 classes"):
        Trainer(TrainConfig(loss="binary_crossentropy", output_activation="sigmoid"), X, y)


def test_weights_overflowing_in_an_epochs_last_step_count_as_divergence():
    # without validation nothing measures a loss after the last update, so the weights are checked
    X, y = regression(n=100)
    config = TrainConfig(hidden_layers=[LayerConfig(8)], output_activation="linear", loss="mse", epochs=6,
                         batch_size=25, validation_split=0.0, optimizer=OptimizerConfig("sgd", 0.01))
    trainer = Trainer(config, X, y)
    real_step = trainer.optimizer.step

    def overflowing_step(params, grads, lr, decay_keys=()):
        real_step(params, grads, lr, decay_keys)
        if trainer.optimizer.steps == 3 * 4:  # the last of epoch 3's four batches
            params["layers.0.weight"][0, 0] = np.inf
    trainer.optimizer.step = overflowing_step
    kept = {}
    result = trainer.fit(on_epoch_end=lambda e: kept.update(
        {k: v.copy() for k, v in e.trainer.network.state_arrays().items()}))
    assert (result.stop_reason, result.epochs_run, result.stopped_epoch) == ("diverged", 2, 3)
    for key, value in trainer.network.state_arrays().items():
        assert np.array_equal(value, kept[key])
