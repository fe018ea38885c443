"""Autoencoders: the target is the input; the encoder is a model file of its own."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.utils.readme import run_model_snippet, run_snippet
from worker.nn import LayerConfig, OptimizerConfig, TrainConfig, Trainer, load_model
from worker.nn.metrics import METRICS

DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)


def autoencoder_config(**overrides) -> TrainConfig:
    base = dict(task="autoencoder", loss="mse", output_activation="linear",
                hidden_layers=[LayerConfig(32, "relu"), LayerConfig(16, "linear"), LayerConfig(32, "relu")],
                optimizer=OptimizerConfig("adam", 0.003), epochs=40, batch_size=32, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def digits_autoencoder():
    trainer = Trainer(autoencoder_config(), DIGITS_X)
    result = trainer.fit()
    return trainer, result


def test_digits_through_a_16_unit_bottleneck_reconstruct_well_below_the_input_variance(digits_autoencoder):
    trainer, result = digits_autoencoder
    assert trainer.network.n_outputs == 64 and min(la.units for la in trainer.network.layers) == 16
    variance = float(trainer.data.X_val.var(axis=0, dtype=np.float64).mean())  # standardized inputs
    assert 0.8 < variance < 1.0  # a few pixels are constant: they standardize to 0
    val_loss = result.history[-1]["val_loss"]
    assert val_loss < 0.35 * variance, (val_loss, variance)  # measured: 0.20 against 0.87
    assert result.history[-1]["val_loss"] < 0.5 * result.history[0]["val_loss"]
    # the history holds the reconstruction loss and no accuracy, R^2 or MAE
    for row in result.history:
        assert {k for k in METRICS if row[k] is not None} == {"train_loss", "val_loss"}


def test_predict_reconstructs_in_the_inputs_units(digits_autoencoder):
    trainer, _ = digits_autoencoder
    model = trainer.model
    assert (model.task, model.meta["target"], model.meta["classes"]) == ("autoencoder", "standardized_input", None)
    reconstruction = model.predict(DIGITS_X)
    assert reconstruction.shape == DIGITS_X.shape
    pre = model.meta["preprocessing"]
    standardized = model.network.predict_raw(model.prepare(DIGITS_X))
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    assert np.allclose(reconstruction, standardized * std + mean)
    error = np.abs(reconstruction - DIGITS_X).mean()
    baseline = np.abs(DIGITS_X - DIGITS_X.mean(axis=0)).mean()  # predicting every pixel's mean
    assert error < 0.5 * baseline, (error, baseline)


def test_the_loss_a_model_computes_is_the_validation_loss_the_run_reported():
    train, val = DIGITS_X[:1400], DIGITS_X[1400:]
    trainer = Trainer(autoencoder_config(epochs=3), train, X_val=val)
    result = trainer.fit()
    loss, grads = trainer.model.loss_and_gradients(val)
    assert loss == pytest.approx(result.history[-1]["val_loss"], rel=1e-5)
    assert set(grads) == set(trainer.network.params)


def test_the_encoder_is_its_own_model_file_giving_the_codes(digits_autoencoder, tmp_path):
    trainer, _ = digits_autoencoder
    model = trainer.model
    encoder = model.encoder()
    assert [la.units for la in encoder.network.layers] == [32, 16]
    assert (encoder.task, encoder.meta["loss"], encoder.meta["output_size"]) == ("encoder", None, 16)
    assert encoder.meta["preprocessing"] == model.meta["preprocessing"]

    # the codes are the autoencoder's own bottleneck activations
    net = model.network
    X = model.prepare(DIGITS_X[:50])
    b = net.workspace(50).batch(50)
    net.forward(b, X, np.zeros((50, 64), np.float32), training=False)
    codes = encoder.predict(DIGITS_X[:50])
    assert codes.shape == (50, 16) and np.array_equal(codes, b.A[1])

    path = tmp_path / "encoder.npz"
    encoder.save(path)
    loaded = load_model(path)
    assert loaded.meta == encoder.meta and np.array_equal(loaded.predict(DIGITS_X), encoder.predict(DIGITS_X))
    # the README's plain-NumPy snippet runs it as it is: every layer is a hidden one
    assert np.allclose(run_snippet(run_model_snippet(), path, DIGITS_X), encoder.predict(DIGITS_X), atol=1e-4)
    with pytest.raises(TypeError, match="encoder"):
        loaded.loss_and_gradients(DIGITS_X[:5])
    with pytest.raises(TypeError, match="not a classifier"):
        loaded.predict_proba(DIGITS_X[:5])


def test_the_encoder_ends_at_the_first_narrowest_layer_and_may_end_in_batch_norm():
    hidden = [LayerConfig(24, "relu"), LayerConfig(8, "tanh", batch_norm=True), LayerConfig(8, "relu"),
              LayerConfig(24, "relu", dropout=0.1)]
    trainer = Trainer(autoencoder_config(hidden_layers=hidden, epochs=2), DIGITS_X)
    trainer.fit()
    encoder = trainer.model.encoder()
    assert [(la.units, la.batch_norm) for la in encoder.network.layers] == [(24, False), (8, True)]
    assert "layers.1.bn_var" in encoder.network.state_arrays()
    assert encoder.predict(DIGITS_X[:3]).shape == (3, 8)


def test_binary_crossentropy_reconstructs_raw_inputs_in_0_1():
    X = DIGITS_X / 16.0
    config = autoencoder_config(loss="binary_crossentropy", output_activation="sigmoid",
                                hidden_layers=[LayerConfig(16, "relu")], epochs=15)
    trainer = Trainer(config, X)
    result = trainer.fit()
    assert result.history[-1]["val_loss"] < 0.7 * result.history[0]["val_loss"]
    model = trainer.model
    assert model.meta["target"] == "input"
    assert trainer.data.train.T.min() >= 0 and trainer.data.train.T.max() <= 1  # raw targets, standardized inputs
    assert not np.shares_memory(trainer.data.train.T, trainer.data.X)
    reconstruction = model.predict(X)
    assert ((reconstruction - X) ** 2).mean() < 0.5 * X.var(axis=0).mean()
    with pytest.raises(ValueError, match=r"X: a binary_crossentropy autoencoder needs inputs in \[0, 1\]"):
        Trainer(config, DIGITS_X)


def test_mse_targets_are_the_standardized_inputs_themselves():
    trainer = Trainer(autoencoder_config(epochs=1), DIGITS_X)
    assert trainer.data.train.T is trainer.data.X and trainer.data.val.T is trainer.data.X_val
    assert abs(float(trainer.data.X.mean())) < 1e-5


@pytest.mark.parametrize("config, args, match", [
    (autoencoder_config(), (DIGITS_X, DIGITS_Y), "y: an autoencoder reconstructs X"),
    (autoencoder_config(loss="categorical_crossentropy", output_activation="softmax"), (DIGITS_X,),
     "loss: an autoencoder reconstructs its input with mse or binary_crossentropy"),
    (autoencoder_config(task="clustering"), (DIGITS_X,), "task: unknown 'clustering'"),
    (TrainConfig(), (DIGITS_X,), "y: targets are required"),
])
def test_bad_autoencoder_setups_name_the_field(config, args, match):
    with pytest.raises(ValueError, match=match):
        Trainer(config, *args)


def test_only_an_autoencoder_has_an_encoder():
    trainer = Trainer(TrainConfig(epochs=1, hidden_layers=[LayerConfig(8)]), DIGITS_X[:100], DIGITS_Y[:100])
    with pytest.raises(ValueError, match="only an autoencoder has one"):
        trainer.model.encoder()
