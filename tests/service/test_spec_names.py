"""The contract's choices are the engine's registries (issue 8, requirement 5)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from service import specs
from service.config import Settings
from service.main import create_app
from worker.nn import OptimizerConfig, ScheduleConfig, names
from worker.nn.callbacks import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]


def literal(annotation) -> tuple:
    return typing.get_args(annotation)


def union_names(annotated) -> tuple:
    union = typing.get_args(annotated)[0]
    return tuple(model.model_fields["name"].default for model in typing.get_args(union))


def test_spec_literals_are_the_registries():
    assert literal(specs.HiddenActivation) == names.HIDDEN_ACTIVATIONS
    assert literal(specs.OutputActivation) == names.OUTPUT_ACTIVATIONS
    assert literal(specs.LossName) == names.LOSSES
    assert literal(specs.InitName) == names.INITIALIZER_NAMES
    assert literal(specs.Monitor) == names.MONITORS
    assert literal(specs.JobTask) == names.TASKS
    assert set(literal(specs.Task)) == set(names.LOSS_TASK.values())  # what a dataset's targets can be


def test_optimizer_and_schedule_unions_cover_the_registries_with_fields_the_engine_knows():
    # each has its own fields, so the union is written out; this keeps it equal to the registry
    assert set(union_names(specs.Optimizer)) == set(names.OPTIMIZER_NAMES)
    assert set(union_names(specs.Schedule)) == set(names.SCHEDULE_NAMES)
    engine_fields = {"optimizer": {f.name for f in dataclasses.fields(OptimizerConfig)},
                     "schedule": {f.name for f in dataclasses.fields(ScheduleConfig)}}
    for kind, annotated in (("optimizer", specs.Optimizer), ("schedule", specs.Schedule)):
        for model in typing.get_args(typing.get_args(annotated)[0]):
            assert set(model.model_fields) <= engine_fields[kind], model.__name__


def test_history_fields_are_the_reported_metrics():
    assert tuple(specs.EpochMetrics.model_fields) == ("epoch", *METRIC_NAMES, "fold", "fold_epoch")


@pytest.mark.parametrize("loss", names.LOSSES)
def test_autoencoder_losses_are_the_registry_s_reconstructing_losses(loss):
    job = specs.JobSpec.model_validate({"dataset": {"builtin": "digits"}, "task": "autoencoder", "loss": loss})
    if loss in names.AUTOENCODER_LOSSES:
        resolved = specs.resolve_spec(job, specs.BUILTIN_DATASETS["digits"])
        assert resolved.model.output_activation == names.DEFAULT_OUTPUT_ACTIVATION[loss]
    else:
        with pytest.raises(specs.SpecMismatch) as refused:
            specs.resolve_spec(job, specs.BUILTIN_DATASETS["digits"])
        assert refused.value.loc == ("loss",)


@pytest.mark.parametrize("loss", names.LOSSES)
def test_resolution_defaults_the_output_activation_from_the_loss_registry(loss):
    dataset = "sine" if names.LOSS_TASK[loss] == "regression" else "moons"
    job = specs.JobSpec.model_validate({"dataset": {"builtin": dataset}, "loss": loss})
    resolved = specs.resolve_spec(job, specs.BUILTIN_DATASETS[dataset])
    assert resolved.model.output_activation == names.DEFAULT_OUTPUT_ACTIVATION[loss]


def test_openapi_lists_the_registry_choices():
    schemas = create_app(Settings(_env_file=None)).openapi()["components"]["schemas"]

    def schema(name):
        return schemas.get(name) or schemas[f"{name}-Input"]

    def enum(prop):
        options = prop.get("anyOf", [prop])
        return next(tuple(o["enum"]) for o in options if "enum" in o)

    assert enum(schema("LayerSpec")["properties"]["activation"]) == names.HIDDEN_ACTIVATIONS
    assert enum(schema("ModelSpec")["properties"]["output_activation"]) == names.OUTPUT_ACTIVATIONS
    assert enum(schema("ModelSpec")["properties"]["init"]) == names.INITIALIZER_NAMES
    assert enum(schema("JobSpec")["properties"]["loss"]) == names.LOSSES
    assert enum(schema("JobSpec")["properties"]["task"]) == names.TASKS
    assert enum(schema("EarlyStoppingSpec")["properties"]["monitor"]) == names.MONITORS
    optimizers = {ref["$ref"].split("/")[-1] for ref in schema("JobSpec")["properties"]["optimizer"]["oneOf"]}
    assert {schema(o.removesuffix("-Input"))["properties"]["name"]["const"] for o in optimizers} \
        == set(names.OPTIMIZER_NAMES)


def test_registering_an_activation_is_the_one_edit_the_contract_needs():
    # a fresh interpreter: register "softsign" in the engine, then import the contract
    code = """
import numpy as np, typing
from worker.nn import activations
activations.ACTIVATIONS["softsign"] = lambda Z: np.divide(Z, 1 + np.abs(Z), out=Z)
activations.DERIVATIVES["softsign"] = lambda A, delta: np.multiply(delta, (1 - np.abs(A)) ** 2, out=delta)
from service import specs
print("softsign" in typing.get_args(specs.HiddenActivation), "softsign" in typing.get_args(specs.OutputActivation))
layer = {"units": 4, "activation": "softsign"}
specs.JobSpec.model_validate({"dataset": {"builtin": "iris"}, "model": {"hidden_layers": [layer]}})
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
