"""Sweep specs without a database: paths, distributions, seeded draws, grids, ASHA's rungs and rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from service.specs import BUILTIN_DATASETS, DEFAULT_LIMITS, JobLimits, SweepSpec
from service.sweeps import SweepError, asha_continues, asha_rungs, draw_trials, leaf_kind, mode_of, reward

DIGITS = BUILTIN_DATASETS["digits"]
SINE = BUILTIN_DATASETS["sine"]


def sweep(space: dict, base: dict | None = None, **fields) -> SweepSpec:
    return SweepSpec.model_validate({"base": base or {"dataset": {"builtin": "digits"}, "epochs": 9},
                                     "space": space, **fields})


def draw(spec: SweepSpec, info=DIGITS, limits: JobLimits = DEFAULT_LIMITS, max_trials: int = 1000):
    return draw_trials(spec, info, limits, max_trials)


def refused(spec: SweepSpec, info=DIGITS, **kwargs) -> SweepError:
    with pytest.raises(SweepError) as caught:
        draw(spec, info, **kwargs)
    return caught.value


# ---------------------------------------------------------------- the contract's shape


def test_the_issue_example_is_a_valid_sweep_spec():
    spec = SweepSpec.model_validate({
        "name": "lr", "base": {"dataset": {"builtin": "digits"}, "epochs": 27},
        "space": {"optimizer.learning_rate": {"loguniform": [1e-4, 0.1]},
                  "model.hidden_layers.0.units": {"choice": [32, 64, 128]}},
        "method": "random", "max_trials": 12, "max_concurrent": 2, "metric": "val_loss", "mode": "min",
        "asha": {"grace_period": 2, "reduction_factor": 3}})
    assert (spec.asha.grace_period, spec.asha.reduction_factor) == (2, 3)
    assert len(draw(spec)) == 12


@pytest.mark.parametrize("distribution, message", [
    ({}, "exactly one"),
    ({"choice": [1], "uniform": [0, 1]}, "exactly one"),
    ({"uniform": [1.0]}, "at least 2"),
    ({"uniform": [2.0, 1.0]}, "above high"),
    ({"loguniform": [0.0, 1.0]}, "above 0"),
    ({"int_uniform": [1.5, 3]}, "integer"),
    ({"choice": []}, "at least 1"),
    ({"normal": [0, 1]}, "Extra inputs"),
])
def test_malformed_distributions_are_refused_by_the_schema(distribution, message):
    with pytest.raises(ValidationError) as caught:
        sweep({"l2": distribution})
    assert message in str(caught.value)


def test_asha_defaults_to_reduction_factor_4_and_mode_to_the_metrics_direction():
    spec = sweep({"l2": {"uniform": [0, 0.1]}}, metric="val_accuracy", asha={"grace_period": 1})
    assert spec.asha.reduction_factor == 4
    assert mode_of(spec) == "max"
    assert mode_of(sweep({"l2": {"uniform": [0, 0.1]}})) == "min"  # val_loss
    with pytest.raises(ValidationError):
        sweep({"l2": {"uniform": [0, 0.1]}}, metric="val_accuracyy")  # the engine's metric names only


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("path, kind", [
    ("optimizer.learning_rate", "float"), ("model.hidden_layers.0.units", "int"), ("l2", "float"),
    ("batch_size", "int"), ("model.hidden_layers.0.activation", "categorical"),
    ("model.hidden_layers.0.batch_norm", "categorical"), ("clip_norm", "float"), ("optimizer.beta1", "float"),
    ("loss", "categorical"), ("seed", "int"),
])
def test_numeric_and_categorical_fields_are_searchable(path, kind):
    spec = sweep({path: {"choice": [1]}})
    assert leaf_kind(path, spec.base) == kind


@pytest.mark.parametrize("path, message", [
    ("optimizer.learnig_rate", "'optimizer.learnig_rate' is not a field"),
    ("model.hidden_layers.1.units", "the base has 1 items"),
    ("model.hidden_layers.x.units", "give an index"),
    ("model.hidden_layers", "section"),
    ("optimizer", "section"),
    ("early_stopping.patience", "not set in the base"),
    ("l2.value", "is a value"),
    ("dataset.validation_split", "same for every trial"),
    ("name", "same for every trial"),
    ("tags", "same for every trial"),
    ("", "not a field"),
])
def test_paths_that_name_no_searchable_field_are_refused_at_space_path(path, message):
    error = refused(sweep({path: {"choice": [1]}}))
    assert error.loc == ("space", path)
    assert message in error.message


def test_a_path_into_the_bases_own_optimizer_follows_its_kind():
    base = {"dataset": {"builtin": "digits"}, "optimizer": {"name": "sgd"}}
    assert "not a field" in refused(sweep({"optimizer.beta1": {"uniform": [0.8, 0.9]}}, base)).message
    momentum = {"dataset": {"builtin": "digits"}, "optimizer": {"name": "momentum"}}
    assert leaf_kind("optimizer.momentum", sweep({"l2": {"choice": [0.0]}}, momentum).base) == "float"


# ---------------------------------------------------------------- values, checked up front


@pytest.mark.parametrize("path, distribution, bad", [
    ("optimizer.learning_rate", {"loguniform": [1e-4, 20.0]}, 20.0),  # le=10
    ("optimizer.learning_rate", {"uniform": [-0.1, 0.1]}, -0.1),  # gt=0
    ("model.hidden_layers.0.units", {"choice": [32, 0]}, 0),
    ("model.hidden_layers.0.units", {"int_uniform": [8, 5000]}, 5000),  # MAX_UNITS
    ("batch_size", {"choice": [32, "64"]}, "64"),  # strict: a string is no integer
    ("model.hidden_layers.0.activation", {"choice": ["relu", "relux"]}, "relux"),
    ("model.hidden_layers.0.dropout", {"uniform": [0.0, 1.0]}, 1.0),  # lt=1
    ("loss", {"choice": ["mse"]}, "mse"),  # cannot train on a classification dataset
    ("l2", {"choice": [0.0, None]}, None),
])
def test_a_value_that_gives_an_invalid_spec_is_refused_naming_the_path_and_value(path, distribution, bad):
    error = refused(sweep({path: distribution}))
    assert error.loc == ("space", path)
    assert error.value == bad
    assert repr(bad) in error.message


def test_deployment_caps_hold_for_every_trial():
    limits = JobLimits(max_units=100)
    error = refused(sweep({"model.hidden_layers.0.units": {"int_uniform": [16, 128]}}), limits=limits)
    assert (error.loc, error.value, error.type) == (("space", "model.hidden_layers.0.units"), 128, "limit_exceeded")
    error = refused(sweep({"l2": {"uniform": [0, 1]}}, max_trials=50), max_trials=20)
    assert (error.loc, error.type) == (("max_trials",), "limit_exceeded")


def test_numeric_fields_take_fitting_distributions_only():
    assert "integer" in refused(sweep({"batch_size": {"uniform": [16, 64]}})).message
    assert "categorical" in refused(sweep({"model.hidden_layers.0.activation": {"int_uniform": [1, 2]}})).message
    # an integer range on a float field is fine: an int is a valid number
    trials = draw(sweep({"l2": {"int_uniform": [0, 1]}}, max_trials=4))
    assert {trial.spec.l2 for trial in trials} <= {0, 1}


def test_the_metric_must_be_measured_on_the_dataset():
    error = refused(sweep({"l2": {"uniform": [0, 0.1]}}, metric="val_accuracy",
                          base={"dataset": {"builtin": "sine"}}), info=SINE)
    assert error.loc == ("metric",)
    error = refused(sweep({"l2": {"uniform": [0, 0.1]}},
                          base={"dataset": {"builtin": "digits", "validation_split": 0.0}}))
    assert (error.loc, "validation" in error.message) == (("metric",), True)


# ---------------------------------------------------------------- drawing


def test_random_draws_are_seeded_and_in_range():
    spec = sweep({"optimizer.learning_rate": {"loguniform": [1e-4, 0.1]},
                  "model.hidden_layers.0.units": {"choice": [32, 64, 128]},
                  "batch_size": {"int_uniform": [16, 64]}, "l2": {"uniform": [0.0, 0.01]}},
                 max_trials=30, seed=7)
    first, again = draw(spec), draw(spec)
    assert [t.params for t in first] == [t.params for t in again]
    reordered = SweepSpec.model_validate({**spec.model_dump(), "space": dict(reversed(spec.space.items()))})
    assert [t.params for t in draw(reordered)] == [t.params for t in first]  # key order does not matter
    other = draw(spec.model_copy(update={"seed": 8}))
    assert [t.params for t in other] != [t.params for t in first]
    for trial in first:
        assert 1e-4 <= trial.spec.optimizer.learning_rate <= 0.1
        assert trial.spec.model.hidden_layers[0].units in (32, 64, 128)
        assert 16 <= trial.spec.batch_size <= 64 and isinstance(trial.spec.batch_size, int)
        assert 0.0 <= trial.spec.l2 <= 0.01
        assert trial.spec.loss == "categorical_crossentropy"  # resolved against the dataset
        assert trial.params["optimizer.learning_rate"] == trial.spec.optimizer.learning_rate
    # loguniform spreads over the decades: some trials below 1e-3, some above 1e-2
    rates = [t.spec.optimizer.learning_rate for t in first]
    assert min(rates) < 1e-3 and max(rates) > 1e-2


def test_the_seed_defaults_to_the_bases():
    space = {"l2": {"uniform": [0.0, 1.0]}}
    seeded = draw(sweep(space, base={"dataset": {"builtin": "digits"}, "seed": 3}, max_trials=3))
    assert [t.params for t in seeded] == [t.params for t in draw(sweep(space, seed=3, max_trials=3))]
    assert [t.params for t in seeded] != [t.params for t in draw(sweep(space, max_trials=3))]


def test_grid_enumerates_the_product_of_choices_capped_by_max_trials():
    space = {"model.hidden_layers.0.units": {"choice": [16, 32]}, "optimizer.learning_rate": {"choice": [0.1, 0.01, 0.001]}}
    trials = draw(sweep(space, method="grid", max_trials=100))
    assert [(t.params["model.hidden_layers.0.units"], t.params["optimizer.learning_rate"]) for t in trials] == [
        (16, 0.1), (16, 0.01), (16, 0.001), (32, 0.1), (32, 0.01), (32, 0.001)]
    assert len(draw(sweep(space, method="grid", max_trials=4))) == 4
    error = refused(sweep({**space, "l2": {"uniform": [0, 1]}}, method="grid"))
    assert error.loc == ("space", "l2") and "choice" in error.message


# ---------------------------------------------------------------- ASHA


def test_rungs_are_grace_times_powers_of_eta_below_the_epochs():
    assert asha_rungs(1, 4, 20) == (1, 4, 16)
    assert asha_rungs(2, 3, 27) == (2, 6, 18)
    assert asha_rungs(3, 3, 27) == (3, 9)  # a rung at the last epoch would stop nothing
    assert asha_rungs(5, 2, 5) == ()


def test_the_rule_matches_ray_tunes_bracket():
    # Ray's _Bracket docstring: b = _Bracket(1, 10, 2, 3); rewards 2 → go on (nothing recorded),
    # 4 → go on (4 ≥ cutoff 2), 1 → stop (1 < the 50th percentile of {2, 4} = 3)
    assert asha_continues(2.0, [], 2)
    assert asha_continues(4.0, [2.0], 2)
    assert not asha_continues(1.0, [2.0, 4.0], 2)
    # η = 4: the cutoff is the 75th percentile with linear interpolation, the trial itself excluded
    others = [1.0, 2.0, 3.0, 4.0]
    cutoff = float(np.percentile(others, 75))  # 3.25
    assert not asha_continues(cutoff - 1e-9, others, 4) and asha_continues(cutoff, others, 4)
    # with one result recorded, a trial must at least match it (the percentile of one value is that value)
    assert asha_continues(5.0, [5.0], 4) and not asha_continues(4.9, [5.0], 4)
    # NaN results are ignored, as nanpercentile does
    assert asha_continues(1.0, [math.nan, 1.0], 4)


def test_rewards_make_higher_better():
    assert reward(0.3, "min") == -0.3 and reward(0.9, "max") == 0.9
