"""service.specs: the job spec's validation and its resolution against a dataset."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.specs import (
    BUILTIN_DATASETS, MAX_PARAMETERS, DatasetInfo, JobSpec, SpecMismatch, parameter_count, resolve_spec,
)

REGRESSION = BUILTIN_DATASETS["sine"]
THREE_CLASSES = BUILTIN_DATASETS["iris"]
TWO_CLASSES = BUILTIN_DATASETS["moons"]


def spec(**values) -> JobSpec:
    return JobSpec.model_validate({"dataset": {"builtin": "iris"}, **values})


def mismatch(job: JobSpec, info: DatasetInfo) -> SpecMismatch:
    with pytest.raises(SpecMismatch) as caught:
        resolve_spec(job, info)
    return caught.value


def error_locs(values: dict) -> set[tuple]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(values)
    return {error["loc"] for error in caught.value.errors()}


def test_defaults():
    job = spec()
    assert (job.epochs, job.batch_size, job.seed, job.optimizer.name, job.lr_schedule.name) == (20, 32, 0, "adam", "constant")
    assert [layer.units for layer in job.model.hidden_layers] == [64]
    assert job.dataset.validation_split == 0.2 and job.checkpoint.keep_last == 2
    assert job.loss is None and job.model.output_activation is None


def test_resolution_fills_loss_and_output_from_the_task():
    resolved = resolve_spec(spec(), THREE_CLASSES)
    assert (resolved.loss, resolved.model.output_activation) == ("categorical_crossentropy", "softmax")
    resolved = resolve_spec(spec(dataset={"builtin": "sine"}), REGRESSION)
    assert (resolved.loss, resolved.model.output_activation) == ("mse", "linear")
    resolved = resolve_spec(spec(loss="binary_crossentropy"), TWO_CLASSES)
    assert resolved.model.output_activation == "sigmoid"


def test_resolution_does_not_change_its_input():
    job = spec()
    resolve_spec(job, THREE_CLASSES)
    assert job.loss is None


@pytest.mark.parametrize("values, info, loc", [
    ({"model": {"output_activation": "softmax"}}, REGRESSION, ("model", "output_activation")),
    ({"loss": "binary_crossentropy"}, THREE_CLASSES, ("loss",)),
    ({"loss": "categorical_crossentropy"}, REGRESSION, ("loss",)),
    ({"loss": "mse"}, THREE_CLASSES, ("loss",)),
    ({"loss": "categorical_crossentropy", "model": {"output_activation": "sigmoid"}}, THREE_CLASSES,
     ("model", "output_activation")),
    ({"loss": "binary_crossentropy", "model": {"output_activation": "softmax"}}, TWO_CLASSES,
     ("model", "output_activation")),
    ({"early_stopping": {"monitor": "val_accuracy"}}, REGRESSION, ("early_stopping", "monitor")),
    ({"early_stopping": {"monitor": "val_r2"}}, THREE_CLASSES, ("early_stopping", "monitor")),
    ({"dataset": {"builtin": "iris", "validation_split": 0.0}, "early_stopping": {"monitor": "val_loss"}},
     THREE_CLASSES, ("early_stopping", "monitor")),
    ({"lr_schedule": {"name": "reduce_on_plateau", "monitor": "val_accuracy"}}, REGRESSION,
     ("lr_schedule", "monitor")),
    ({"dataset": {"builtin": "iris", "validation_split": 0.999}}, THREE_CLASSES, ("dataset", "validation_split")),
    ({"model": {"hidden_layers": [{"units": 4096}, {"units": 4096}]}}, THREE_CLASSES, ("model", "hidden_layers")),
])
def test_mismatches_name_the_field(values, info, loc):
    error = mismatch(spec(**values), info)
    assert error.loc == loc and error.message


def test_validation_data_of_the_dataset_counts_for_val_monitors():
    xor = BUILTIN_DATASETS["xor"]  # ships its own validation set
    job = spec(dataset={"builtin": "xor", "validation_split": 0.0}, early_stopping={"monitor": "val_loss"})
    assert resolve_spec(job, xor).early_stopping.monitor == "val_loss"


def test_parameter_count():
    job = spec(model={"hidden_layers": [{"units": 8, "batch_norm": True}, {"units": 4}]})
    info = DatasetInfo(rows=10, features=3, task="classification", classes=[0, 1, 2])
    resolved = resolve_spec(job, info)
    # 3*8+8, bn 2*8, 8*4+4, 4*3+3
    assert parameter_count(resolved, info) == 32 + 16 + 36 + 15
    assert parameter_count(resolved, info) < MAX_PARAMETERS


@pytest.mark.parametrize("values, loc", [
    ({"dataset": {}}, ("dataset",)),
    ({"dataset": {"builtin": "iris", "id": "abc"}}, ("dataset",)),
    ({"dataset": {"builtin": "mnist"}}, ("dataset", "builtin")),
    ({"dataset": {"builtin": "iris"}, "epochs": 0}, ("epochs",)),
    ({"dataset": {"builtin": "iris"}, "epochs": 10_001}, ("epochs",)),
    ({"dataset": {"builtin": "iris"}, "batch_size": 0}, ("batch_size",)),
    ({"dataset": {"builtin": "iris"}, "tags": [""]}, ("tags", 0)),
    ({"dataset": {"builtin": "iris"}, "model": {"hidden_layers": [{"units": 8, "activation": "swish"}]}},
     ("model", "hidden_layers", 0, "activation")),
    ({"dataset": {"builtin": "iris"}, "optimizer": {"name": "adam", "momentum": 0.9}}, ("optimizer", "adam", "momentum")),
    ({"dataset": {"builtin": "iris"}, "early_stopping": {"patience": -1}}, ("early_stopping", "patience")),
    ({"dataset": {"builtin": "iris"}, "learning_rate": 0.1}, ("learning_rate",)),
])
def test_invalid_specs_name_the_field(values, loc):
    assert loc in error_locs(values)


def test_optimizer_parameters_are_per_optimizer():
    job = spec(optimizer={"name": "momentum", "learning_rate": 0.1, "momentum": 0.5})
    assert (job.optimizer.name, job.optimizer.momentum) == ("momentum", 0.5)
    assert spec(optimizer={"name": "adamw"}).optimizer.weight_decay == 0.01


def test_the_schema_example_is_a_valid_spec_on_its_dataset():
    example = JobSpec.model_json_schema()["examples"][0]
    resolved = resolve_spec(JobSpec.model_validate(example), BUILTIN_DATASETS[example["dataset"]["builtin"]])
    assert resolved.loss == "categorical_crossentropy"
