"""Transfer learning: hidden layers started from a trained model, frozen layers, carried-over scaling."""
import dataclasses

import numpy as np
import pytest
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from worker.nn import (LayerConfig, OptimizerConfig, TrainConfig, Trainer, Transfer, check_layer_shapes,
                       layer_shapes_from_meta)
from worker.nn.network import zeros_like_params

DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)
# two disjoint sets of images: the source task learns digits on one, the target task (parity,
# few labels) is built from the other, so the source never saw a target image
SOURCE_ROWS, TARGET_ROWS = np.split(np.random.default_rng(0).permutation(len(DIGITS_Y)), [1000])


def config(**overrides) -> TrainConfig:
    base = dict(hidden_layers=[LayerConfig(64, "relu"), LayerConfig(32, "relu")],
                optimizer=OptimizerConfig("adam", 0.005), epochs=30, batch_size=32, seed=0, validation_split=0.0)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def source_model():
    trainer = Trainer(config(), DIGITS_X[SOURCE_ROWS], DIGITS_Y[SOURCE_ROWS])
    trainer.fit()
    return trainer.model


@pytest.fixture(scope="module")
def batch_norm_source():
    hidden = [LayerConfig(32, "relu", batch_norm=True), LayerConfig(16, "tanh", dropout=0.1)]
    trainer = Trainer(config(hidden_layers=hidden, epochs=5), DIGITS_X[SOURCE_ROWS], DIGITS_Y[SOURCE_ROWS])
    trainer.fit()
    return trainer.model


def test_frozen_layers_are_bit_identical_to_the_source_after_training(batch_norm_source):
    source = batch_norm_source.network.state_arrays()
    hidden = [LayerConfig(32, "relu", batch_norm=True), LayerConfig(16, "tanh", dropout=0.1)]
    target = config(hidden_layers=hidden, epochs=4, freeze=[0], l2=1e-3, validation_split=0.2,
                    optimizer=OptimizerConfig("adamw", 0.01, weight_decay=0.1))
    X, y = DIGITS_X[TARGET_ROWS], DIGITS_Y[TARGET_ROWS] % 2
    trainer = Trainer(target, X, y, transfer=Transfer.from_model(batch_norm_source, [0, 1]))
    scratch = Trainer(target, X, y)
    out_keys = ("layers.2.weight", "layers.2.bias")
    # the output layer is fresh: what a run without transfer starts from, same seed
    for key in out_keys:
        assert np.array_equal(trainer.network.params[key], scratch.network.params[key])
    assert trainer.fit().stop_reason == "completed"

    after = trainer.network.state_arrays()
    layer0 = [k for k in after if k.startswith("layers.0.")]
    names = ("weight", "bias", "bn_gamma", "bn_beta", "bn_mean", "bn_var")
    assert sorted(layer0) == sorted(f"layers.0.{n}" for n in names)
    for key in layer0:
        assert np.array_equal(after[key], source[key]), key
    assert not np.array_equal(after["layers.1.weight"], source["layers.1.weight"])  # trainable: fine-tuned
    # no optimizer state for frozen parameters
    assert trainer.optimizer.state and not [k for k in trainer.optimizer.state if ".layers.0." in f".{k}"]
    assert set(trainer.network.trainable_params) == {k for k in trainer.network.params if not k.startswith("layers.0.")}


def test_no_backward_work_below_the_lowest_trainable_layer():
    X, y = DIGITS_X[:64], DIGITS_Y[:64]
    hidden = [LayerConfig(16, "relu"), LayerConfig(16, "relu", batch_norm=True), LayerConfig(8, "tanh")]
    trainer = Trainer(config(hidden_layers=hidden, freeze=[0, 1]), X, y)
    net = trainer.network
    b = net.workspace(32).batch(32)
    for delta in b.delta:
        delta.fill(np.nan)  # sentinels: any write below the floor would replace them
    grads = zeros_like_params(net.trainable_params)
    assert sorted(grads) == ["layers.2.bias", "layers.2.weight", "layers.3.bias", "layers.3.weight"]
    x, t = trainer.data.X[:32], trainer.data.train.T[:32]
    net.forward(b, x, t, training=True, rng=trainer.rng)
    net.backward(b, x, t, grads)
    assert np.isnan(b.delta[0]).all() and np.isnan(b.delta[1]).all()
    assert np.isfinite(b.delta[2]).all() and all(np.isfinite(g).all() for g in grads.values())


def test_fine_tuning_beats_training_from_scratch_on_a_small_related_task(source_model):
    """Parity of digits from 40 labelled images, tested on the other ~750 target images: starting
    from the digit classifier's two hidden layers with the first one frozen, against the same
    network and configuration trained from scratch; three fixed label draws (seeds)."""
    X, y = DIGITS_X[TARGET_ROWS], DIGITS_Y[TARGET_ROWS] % 2
    gains = []
    with threadpool_limits(1):
        for seed in range(3):
            labelled = np.random.default_rng(seed).choice(len(y), 40, replace=False)
            test = np.setdiff1d(np.arange(len(y)), labelled)
            target = config(epochs=40, batch_size=8, seed=seed)
            accuracy = {}
            for name, transfer, freeze in (("scratch", None, []),
                                           ("fine-tuned", Transfer.from_model(source_model, [0, 1]), [0])):
                trainer = Trainer(dataclasses.replace(target, freeze=freeze), X[labelled], y[labelled],
                                  transfer=transfer)
                trainer.fit()
                accuracy[name] = float((trainer.model.predict(X[test]) == y[test]).mean())
            gains.append(accuracy["fine-tuned"] - accuracy["scratch"])
    print("fine-tuned minus scratch accuracy per seed:", gains)
    assert min(gains) > 0, gains
    assert np.mean(gains) > 0.03, gains  # measured: about +5 points


def test_resume_with_frozen_layers_is_bit_identical(batch_norm_source, tmp_path):
    hidden = [LayerConfig(32, "relu", batch_norm=True), LayerConfig(16, "tanh", dropout=0.1)]
    target = config(hidden_layers=hidden, epochs=6, freeze=[0], validation_split=0.25,
                    optimizer=OptimizerConfig("adam", 0.01))
    X, y = DIGITS_X[TARGET_ROWS], DIGITS_Y[TARGET_ROWS] % 2
    path = tmp_path / "checkpoint.npz"

    def make():
        return Trainer(target, X, y, transfer=Transfer.from_model(batch_norm_source, [0, 1]))

    with threadpool_limits(1):
        straight = make()
        straight_result = straight.fit()
        paused = make()
        paused.fit(on_epoch_end=lambda e: (e.trainer.save_checkpoint(path), "paused")[1] if e.epoch == 3 else None)
        resumed = make()
        resumed.load_checkpoint(path)
        result = resumed.fit()
    arrays_a, _ = straight.state_dict()
    arrays_b, _ = resumed.state_dict()
    assert set(arrays_a) == set(arrays_b)
    assert not [k for k in arrays_a if k.startswith("optimizer/") and ".layers.0." in k]
    for key in arrays_a:
        assert np.array_equal(arrays_a[key], arrays_b[key]), key
    # resumed without the first 3 epochs' history: it holds the epochs run since
    assert [h["val_loss"] for h in result.history] == [h["val_loss"] for h in straight_result.history[3:]]

    # the checkpoint remembers the standardization the data was prepared with
    without_transfer = Trainer(target, X, y)
    with pytest.raises(ValueError, match="input standardization"):
        without_transfer.load_checkpoint(path)


def test_the_source_input_standardization_is_carried_over(source_model):
    X, y = DIGITS_X[TARGET_ROWS][:100], DIGITS_Y[TARGET_ROWS][:100] % 2
    carried = Trainer(config(epochs=1), X, y, transfer=Transfer.from_model(source_model, [0]))
    own = Trainer(config(epochs=1), X, y, transfer=Transfer.from_model(source_model, [0], standardization=False))
    pre = source_model.meta["preprocessing"]
    assert np.array_equal(carried.data.mean, np.asarray(pre["mean"], np.float32))
    assert carried.model.meta["preprocessing"] == pre
    assert not np.array_equal(own.data.mean, carried.data.mean)  # 100 other rows have another mean
    with pytest.raises(ValueError, match="standardize"):
        Trainer(config(standardize=False), X, y, transfer=Transfer.from_model(source_model, [0]))


@pytest.mark.parametrize("hidden, layers, match", [
    ([LayerConfig(32), LayerConfig(32)], [0],
     r"layer 0: weight is \(64, 64\), this network's layer 0 needs \(64, 32\)"),
    ([LayerConfig(64), LayerConfig(16)], [0, 1],
     r"layer 1: weight is \(64, 32\), this network's layer 1 needs \(64, 16\)"),
    ([LayerConfig(64, batch_norm=True), LayerConfig(32)], [0],
     "layer 0: this layer has batch norm, the source has none"),
    ([LayerConfig(64)], [1], "layer 1 is not a hidden layer of this network"),
])
def test_shape_mismatches_name_the_layer(source_model, hidden, layers, match):
    X, y = DIGITS_X[:50], DIGITS_Y[:50]
    transfer = Transfer.from_model(source_model, layers)
    with pytest.raises(ValueError, match=match):
        Trainer(config(hidden_layers=hidden), X, y, transfer=transfer)
    # the same check from the source's meta alone (a request checked before anything trains)
    with pytest.raises(ValueError, match=match):
        check_layer_shapes(layer_shapes_from_meta(source_model.meta, layers), 64,
                           [(la.units, la.batch_norm) for la in hidden])


def test_shapes_from_meta_are_the_transferred_arrays_shapes(batch_norm_source):
    transfer = Transfer.from_model(batch_norm_source, [0, 1])
    assert layer_shapes_from_meta(batch_norm_source.meta, [0, 1]) == transfer.shapes()
    with pytest.raises(ValueError, match="layer 2 is not a hidden layer of the source"):
        Transfer.from_model(batch_norm_source, [2])  # the output layer


def test_other_inputs_or_a_batch_norm_source_into_a_plain_layer_are_refused(source_model, batch_norm_source):
    with pytest.raises(ValueError, match=r"layer 0: weight is \(64, 64\), this network's layer 0 needs \(10, 64\)"):
        Trainer(config(), DIGITS_X[:50, :10], DIGITS_Y[:50],
                transfer=Transfer.from_model(source_model, [0], standardization=False))
    with pytest.raises(ValueError, match="standardization: mean has shape"):
        Trainer(config(), DIGITS_X[:50, :10], DIGITS_Y[:50], transfer=Transfer.from_model(source_model, [0]))
    with pytest.raises(ValueError, match="layer 0: the source has batch norm, this layer has none"):
        Trainer(config(hidden_layers=[LayerConfig(32)]), DIGITS_X[:50], DIGITS_Y[:50],
                transfer=Transfer.from_model(batch_norm_source, [0]))


@pytest.mark.parametrize("freeze, match", [([2], r"freeze\[0\]: 2 is not a hidden layer index \(0..1\)"),
                                           ([0, 0], "freeze: lists a layer twice"),
                                           ([-1], r"freeze\[0\]")])
def test_bad_freeze_lists_are_refused(freeze, match):
    with pytest.raises(ValueError, match=match):
        Trainer(config(freeze=freeze), DIGITS_X[:50], DIGITS_Y[:50])
