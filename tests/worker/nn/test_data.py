"""Targets, the seeded stratified split and standardization."""
import numpy as np
import pytest

from worker.nn import TrainConfig, Trainer
from worker.nn.data import encode_targets, split_indices


def test_split_is_stratified_seeded_and_sized_like_the_spec():
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    train, val = split_indices(100, 0.25, seed=3, strata=y)
    assert len(train) == int(100 * 0.75) and len(val) == 25
    # shares 12.5, 7.5, 5: floors 12, 7, 5 and the one row left goes to the first largest remainder
    assert np.bincount(y[val]).tolist() == [13, 7, 5]
    assert set(train).isdisjoint(val) and len(set(train) | set(val)) == 100
    again = split_indices(100, 0.25, seed=3, strata=y)
    assert np.array_equal(again[1], val)
    other = split_indices(100, 0.25, seed=4, strata=y)
    assert not np.array_equal(other[1], val)


def test_split_keeps_each_class_share_within_one_row():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 1797)
    train, val = split_indices(len(y), 0.2, seed=0, strata=y)
    counts, val_counts = np.bincount(y), np.bincount(y[val], minlength=7)
    assert np.all(np.abs(val_counts - counts * len(val) / len(y)) < 1)


def test_string_labels_and_one_hot_targets():
    t = encode_targets(np.array(["b", "a", "c", "a"]), "categorical_crossentropy", ["a", "b", "c"], np.float32)
    assert t.labels.tolist() == [1, 0, 2, 0] and t.T.tolist()[0] == [0, 1, 0]
    one_hot = np.eye(3)[[2, 0]]
    t = encode_targets(one_hot, "categorical_crossentropy", [0, 1, 2], np.float32)
    assert t.labels.tolist() == [2, 0] and t.T.dtype == np.float32
    with pytest.raises(ValueError, match="sum to 1"):
        encode_targets(np.array([[1.0, 1.0]]), "categorical_crossentropy", [0, 1], np.float32)


def test_trainer_with_string_labels_predicts_strings():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (200, 3))
    y = np.where(X[:, 0] > 0, "right", "left")
    trainer = Trainer(TrainConfig(epochs=20, batch_size=16), X, y)
    trainer.fit()
    model = trainer.model
    assert model.meta["classes"] == ["left", "right"]
    assert (model.predict(X) == y).mean() > 0.9


def test_standardization_uses_the_training_part_only():
    rng = np.random.default_rng(2)
    X = rng.normal(5, 3, (100, 2))
    X_before = X.copy()
    X_val = rng.normal(50, 1, (20, 2))
    y, y_val = np.arange(100) % 2, np.arange(20) % 2
    trainer = Trainer(TrainConfig(epochs=0), X, y, X_val, y_val)
    assert np.allclose(trainer.data.mean, X.mean(0), rtol=1e-6) and np.allclose(trainer.data.std, X.std(0), rtol=1e-5)
    assert np.allclose(trainer.data.X.mean(0), 0, atol=1e-5)
    assert trainer.data.X_val.mean() > 5  # validation is scaled with the training statistics
    assert np.array_equal(X, X_before)  # the caller's array is not modified
