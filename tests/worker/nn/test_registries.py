"""The registries are the one source of names: everything else is read off them."""
import numpy as np
import pytest

from worker.nn import LayerConfig, TrainConfig, Trainer, names
from worker.nn.activations import ACTIVATIONS, DERIVATIVES, OUTPUT_ONLY_ACTIVATIONS
from worker.nn.callbacks import METRIC_NAMES
from worker.nn.early_stopping import monitor_direction
from worker.nn.losses import LOSS_FUNCTIONS, make_loss
from worker.nn.metrics import METRICS, TASKS, measured_metrics, unmeasured_reason


def test_every_activation_has_its_derivative_and_hidden_ones_exclude_output_only_ones():
    assert set(ACTIVATIONS) == set(DERIVATIVES)
    assert set(names.OUTPUT_ACTIVATIONS) == set(ACTIVATIONS)
    assert set(names.HIDDEN_ACTIVATIONS) | set(OUTPUT_ONLY_ACTIVATIONS) == set(ACTIVATIONS)
    assert not set(names.HIDDEN_ACTIVATIONS) & set(OUTPUT_ONLY_ACTIVATIONS)


@pytest.mark.parametrize("loss", names.LOSSES)
def test_every_loss_builds_with_its_default_output_and_refuses_others_it_cannot_use(loss):
    default = names.DEFAULT_OUTPUT_ACTIVATION[loss]
    assert make_loss(loss, default).name == loss
    assert names.LOSS_TASK[loss] in TASKS
    required = names.REQUIRED_OUTPUT_ACTIVATION.get(loss)
    for output in names.OUTPUT_ACTIVATIONS:
        if required is not None and output != required:
            with pytest.raises(ValueError, match="output_activation"):
                make_loss(loss, output)


def test_metric_directions_and_reported_names_come_from_metrics():
    for name, metric in METRICS.items():
        assert monitor_direction(name, "auto") == metric.direction
    assert set(names.MAXIMIZED) | set(names.MINIMIZED) == set(names.MONITORS) == set(METRICS)
    assert METRIC_NAMES == (*METRICS, "lr", "seconds")
    assert unmeasured_reason("val_r2", "classification", True) == "val_r2 is only measured for regression"
    assert unmeasured_reason("val_loss", "regression", False) == "val_loss needs validation data (validation_split > 0)"
    assert unmeasured_reason("val_loss", "autoencoder", True) is None


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("validation_split", [0.0, 0.25])
def test_a_run_reports_exactly_the_metrics_the_registry_says_its_task_measures(task, validation_split):
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (64, 3))
    y = {"classification": (X[:, 0] > 0).astype(int), "regression": X[:, :2].sum(axis=1), "autoencoder": None}[task]
    loss = "mse" if task != "classification" else "categorical_crossentropy"
    config = TrainConfig(hidden_layers=[LayerConfig(4)], loss=loss,
                         output_activation=names.DEFAULT_OUTPUT_ACTIVATION[loss],
                         task=task if task == "autoencoder" else None, epochs=1, validation_split=validation_split)
    reported = []
    Trainer(config, X, y).fit(on_epoch_end=lambda e: reported.append(e.metrics))
    measured = {k for k, v in reported[0].items() if v is not None and k in METRICS}
    assert measured == measured_metrics(task, validation_split > 0)


def test_names_are_the_registries_keys_in_order():
    from worker.nn.initializers import INITIALIZERS
    from worker.nn.optimizers import OPTIMIZERS
    from worker.nn.schedules import SCHEDULES
    assert names.LOSSES == tuple(LOSS_FUNCTIONS)
    assert names.OPTIMIZER_NAMES == tuple(OPTIMIZERS)
    assert names.SCHEDULE_NAMES == tuple(SCHEDULES)
    assert names.INITIALIZER_NAMES == tuple(INITIALIZERS)
    assert names.AUTOENCODER_LOSSES == tuple(k for k, v in LOSS_FUNCTIONS.items() if v.reconstructs)
