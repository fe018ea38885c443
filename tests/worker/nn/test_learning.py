"""The engine learns: XOR, scikit-learn's digits, a noisy sine."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from worker.nn import LayerConfig, OptimizerConfig, TrainConfig, Trainer


def test_xor_with_a_2_2_1_sigmoid_network():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    y = np.array([0, 1, 1, 0])
    config = TrainConfig(
        hidden_layers=[LayerConfig(2, "sigmoid")], output_activation="sigmoid", loss="binary_crossentropy",
        optimizer=OptimizerConfig("adam", 0.05), epochs=1500, batch_size=4, seed=0,
        validation_split=0.0, standardize=False)
    # (2-2-1 has local minima; some seeds stall at 75%. Seed 0 does not, and the run is deterministic.)
    trainer = Trainer(config, X, y)
    result = trainer.fit()
    assert result.stop_reason == "completed"
    assert (trainer.model.predict(X) == y).all()
    assert result.history[-1]["train_accuracy"] == 1.0
    assert result.history[-1]["train_loss"] < 0.01


def test_digits_one_hidden_layer_reaches_97_percent_held_out():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    config = TrainConfig(hidden_layers=[LayerConfig(256, "relu")], optimizer=OptimizerConfig("adam", 1e-3),
                         epochs=60, batch_size=32, seed=0, validation_split=0.0, standardize=False)
    trainer = Trainer(config, X_train, y_train)
    trainer.fit()
    accuracy = (trainer.model.predict(X_test) == y_test).mean()
    assert accuracy >= 0.97, accuracy


def test_noisy_sine_regression_r2_above_0_99_held_out():
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, (1000, 1))
    y = np.sin(x[:, 0]) + rng.normal(0, 0.05, 1000)
    X_train, X_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    config = TrainConfig(
        hidden_layers=[LayerConfig(32, "tanh"), LayerConfig(32, "tanh")], output_activation="linear", loss="mse",
        optimizer=OptimizerConfig("adam", 0.01), epochs=150, batch_size=32, seed=0, validation_split=0.1)
    trainer = Trainer(config, X_train, y_train)
    result = trainer.fit()
    prediction = trainer.model.predict(X_test)
    assert prediction.shape == y_test.shape
    assert r2_score(y_test, prediction) >= 0.99
    last = result.history[-1]
    assert last["val_r2"] > 0.98 and last["val_mae"] < 0.1 and last["train_accuracy"] is None
