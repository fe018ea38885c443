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


# ---------------------------------------------------------------- issue 8: experiments


def test_autoencoder_on_a_classification_dataset_reconstructs_its_inputs():
    resolved = resolve_spec(spec(task="autoencoder", model={"hidden_layers": [{"units": 2}]}), THREE_CLASSES)
    assert (resolved.task, resolved.loss, resolved.model.output_activation) == ("autoencoder", "mse", "linear")
    # output layer as wide as the input: 4 -> 2 -> 4
    assert parameter_count(resolved, THREE_CLASSES) == (4 * 2 + 2) + (2 * 4 + 4)
    bce = resolve_spec(spec(task="autoencoder", loss="binary_crossentropy"), THREE_CLASSES)
    assert bce.model.output_activation == "sigmoid"
    assert mismatch(spec(task="autoencoder", loss="categorical_crossentropy"), THREE_CLASSES).loc == ("loss",)
    refused = mismatch(spec(task="autoencoder", early_stopping={"monitor": "val_accuracy"}), THREE_CLASSES)
    assert refused.loc == ("early_stopping", "monitor")


def test_the_task_is_filled_from_the_dataset_and_must_match_it():
    assert resolve_spec(spec(), THREE_CLASSES).task == "classification"
    assert resolve_spec(spec(), REGRESSION).task == "regression"
    wrong = mismatch(spec(task="regression"), THREE_CLASSES)
    assert wrong.loc == ("task",) and "classification" in wrong.message
    assert error_locs({"dataset": {"builtin": "iris"}, "task": "clustering"}) == {("task",)}


def test_freeze_and_init_from_name_hidden_layers_of_this_spec():
    two_layers = {"hidden_layers": [{"units": 8}, {"units": 4}]}
    ok = resolve_spec(spec(model=two_layers, freeze=[0], init_from={"job_id": "a" * 32, "layers": [0, 1]}),
                      THREE_CLASSES)
    assert ok.freeze == [0] and ok.init_from.layers == [0, 1]
    assert mismatch(spec(model=two_layers, freeze=[0, 2]), THREE_CLASSES).loc == ("freeze", 1)
    assert mismatch(spec(model=two_layers, freeze=[1, 1]), THREE_CLASSES).loc == ("freeze", 1)
    out_of_range = mismatch(spec(model=two_layers, init_from={"job_id": "x", "layers": [3]}), THREE_CLASSES)
    assert out_of_range.loc == ("init_from", "layers", 0) and "there are 2" in out_of_range.message
    assert error_locs({"dataset": {"builtin": "iris"}, "freeze": [-1]}) == {("freeze", 0)}
    assert error_locs({"dataset": {"builtin": "iris"}, "init_from": {"job_id": "x", "layers": []}}) \
        == {("init_from", "layers")}


def test_check_transfer_names_the_layer_whose_shape_differs():
    from service.specs import TransferSource, check_transfer

    source = TransferSource(input_size=4, hidden=((64, False), (32, False)))
    mine = resolve_spec(spec(model={"hidden_layers": [{"units": 64}, {"units": 16}]},
                             init_from={"job_id": "x", "layers": [0, 1]}), THREE_CLASSES)
    refused = pytest.raises(SpecMismatch, check_transfer, mine, THREE_CLASSES, source).value
    assert refused.loc == ("init_from", "layers", 1)
    assert refused.message == "source layer 1 is 64→32, this spec's layer 1 is 64→16"
    only_first = mine.model_copy(update={"init_from": mine.init_from.model_copy(update={"layers": [0]})})
    check_transfer(only_first, THREE_CLASSES, source)  # layer 0 fits: 4→64 on both sides
    other_inputs = pytest.raises(SpecMismatch, check_transfer, only_first, REGRESSION, source).value
    assert other_inputs.loc == ("init_from", "layers", 0) and "4→64" in other_inputs.message
    batch_norm = TransferSource(input_size=4, hidden=((64, True),))
    bn = pytest.raises(SpecMismatch, check_transfer, only_first, THREE_CLASSES, batch_norm).value
    assert "batch norm" in bn.message
    standardized = TransferSource(input_size=4, hidden=((64, False),), standardized=True)
    raw = only_first.model_copy(update={"dataset": only_first.dataset.model_copy(update={"standardize": False})})
    assert pytest.raises(SpecMismatch, check_transfer, raw, THREE_CLASSES, standardized).value.loc \
        == ("dataset", "standardize")
    check_transfer(only_first, THREE_CLASSES, standardized)
    shallow = TransferSource(input_size=4, hidden=((64, False),))
    assert pytest.raises(SpecMismatch, check_transfer, mine, THREE_CLASSES, shallow).value.loc \
        == ("init_from", "layers", 1)


def test_cross_validation_folds_are_checked_against_the_data_and_the_caps():
    from service.specs import JobLimits, LimitExceeded, planned_epochs

    job = spec(cross_validation={"folds": 5}, epochs=10)
    assert planned_epochs(resolve_spec(job, THREE_CLASSES).model_dump(mode="json")) == 60  # 5 folds and the refit
    assert error_locs({"dataset": {"builtin": "iris"}, "cross_validation": {"folds": 1}}) == {("cross_validation", "folds")}
    assert mismatch(spec(cross_validation={"folds": 5}), BUILTIN_DATASETS["xor"]).loc == ("cross_validation",)
    with pytest.raises(LimitExceeded) as capped:
        resolve_spec(job, THREE_CLASSES, JobLimits(max_folds=4))
    assert capped.value.loc == ("cross_validation", "folds")
    with pytest.raises(LimitExceeded) as too_long:
        resolve_spec(job, THREE_CLASSES, JobLimits(max_epochs=50))
    assert planned_epochs(spec(epochs=7).model_dump(mode="json")) == 7
    assert too_long.value.loc == ("cross_validation", "folds") and "60 epochs" in too_long.value.message
    # each fold validates, so a validation monitor is fine even with validation_split 0 ...
    resolve_spec(spec(cross_validation={"folds": 3}, dataset={"builtin": "iris", "validation_split": 0.0},
                      early_stopping={"monitor": "val_accuracy"}), THREE_CLASSES)
    # ... but the refit has no validation part for reduce_on_plateau to watch
    plateau = mismatch(spec(cross_validation={"folds": 3}, lr_schedule={"name": "reduce_on_plateau"}), THREE_CLASSES)
    assert plateau.loc == ("lr_schedule", "monitor")
    resolve_spec(spec(cross_validation={"folds": 3},
                      lr_schedule={"name": "reduce_on_plateau", "monitor": "train_loss"}), THREE_CLASSES)
