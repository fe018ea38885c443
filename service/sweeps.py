"""Sweeps without the database: which spec fields a space may name, the trials a sweep draws, and
ASHA's rungs and rule.

`draw_trials` is the one place a sweep becomes trials: it checks every path against JobSpec,
validates the ends of every range (and every choice) up front, then draws (random: seeded
`random.Random`, so the same sweep spec gives the same trials; grid: the cartesian product of the
choice lists) and resolves every trial's spec against the dataset. Any failure is a SweepError
located at `space.<path>` (or the sweep field at fault), which the API answers as a 422.
"""
from __future__ import annotations

import itertools
import math
import random
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ValidationError

from service.specs import (
    ChoiceValue, DatasetInfo, Distribution, JobLimits, JobSpec, SpecMismatch, SweepSpec, resolve_spec,
)
from worker.nn import names as engine
from worker.nn.metrics import unmeasured_reason

# Sections a space may not reach into: every trial trains on the base's data under the base's labels.
FIXED_PATHS = ("dataset", "name", "tags")


class SweepError(ValueError):
    """A sweep spec that cannot give valid trials; `loc` names the field (as in a 422)."""

    def __init__(self, loc: tuple[str | int, ...], message: str, value: Any = None, type: str = "sweep_invalid"):
        super().__init__(message)
        self.loc, self.message, self.value, self.type = loc, message, value, type


@dataclass(frozen=True)
class Trial:
    params: dict[str, ChoiceValue]
    spec: JobSpec  # resolved against the dataset


def mode_of(spec: SweepSpec) -> Literal["min", "max"]:
    return spec.mode or ("max" if spec.metric in engine.MAXIMIZED else "min")


# ---------------------------------------------------------------- paths


def leaf_kind(path: str, base: JobSpec) -> str:
    """"int", "float" or "categorical": what the dotted path names in `base`; SweepError otherwise."""
    parts = path.split(".")
    if parts[0] in FIXED_PATHS:
        raise SweepError(("space", path), f"{parts[0]!r} is the same for every trial; it cannot be searched")
    node: Any = base
    annotation: Any = None
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SweepError(("space", path), f"{where!r}: the base has {len(node)} items here; "
                                 f"give an index from 0 to {len(node) - 1}")
            node, annotation = node[int(part)], None
        elif isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                raise SweepError(("space", path), f"{where!r} is not a field of the job spec "
                                 f"(here: {', '.join(fields)})")
            node, annotation = getattr(node, part), fields[part].annotation
        elif node is None:
            raise SweepError(("space", path), f"{'.'.join(parts[:depth])!r} is not set in the base spec; "
                             "set it there to search its fields")
        else:
            raise SweepError(("space", path), f"{'.'.join(parts[:depth])!r} is a value, not a section")
    if isinstance(node, (BaseModel, list, dict)) or (node is None and _is_section(annotation)):
        raise SweepError(("space", path), f"{path!r} is a section of the spec; name one of its fields")
    kind = _kind(annotation)
    if kind is None:
        raise SweepError(("space", path), f"{path!r} is neither numeric nor categorical")
    return kind


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def _is_section(annotation: Any) -> bool:
    return any(isinstance(member, type) and issubclass(member, BaseModel) for member in _members(annotation))


def _kind(annotation: Any) -> str | None:
    members = _members(annotation)
    if len(members) != 1:
        return None
    member = members[0]
    if member is bool or typing.get_origin(member) is Literal:
        return "categorical"
    if member is int:
        return "int"
    if member is float:
        return "float"
    return None


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the JSON spec `body` with the dotted path set to `value`."""
    body = _copy(body)
    node: Any = body
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


# ---------------------------------------------------------------- drawing


def draw_trials(spec: SweepSpec, info: DatasetInfo, limits: JobLimits, max_trials: int) -> list[Trial]:
    """The sweep's trials, each spec resolved against `info`; SweepError names what is wrong."""
    if spec.max_trials > max_trials:
        raise SweepError(("max_trials",), f"{spec.max_trials} trials exceed the cap of {max_trials} "
                         "(MAX_TRIALS_PER_SWEEP)", spec.max_trials, "limit_exceeded")
    if spec.base.cross_validation is not None:  # its estimate is the folds' mean, not one epoch's metric
        raise SweepError(("base", "cross_validation"), "a sweep ranks each trial by its best epoch's metric (and "
                         "ASHA compares trials epoch by epoch); a cross-validated trial's estimate is its folds' mean, "
                         "so sweeps do not take cross-validated jobs", None, "spec_mismatch")
    has_validation = info.has_validation or spec.base.dataset.validation_split > 0
    reason = unmeasured_reason(spec.metric, info.task, has_validation)
    if reason is not None:
        raise SweepError(("metric",), reason, spec.metric, "spec_mismatch")
    base = spec.base.model_dump(mode="json")
    paths = sorted(spec.space)  # a fixed order: the draw does not depend on the JSON's key order
    for path in paths:
        check_distribution(path, spec.space[path], leaf_kind(path, spec.base), base, info, limits)
    if spec.method == "grid":
        combos = grid(spec, paths)
    else:
        rng = random.Random(spec.seed if spec.seed is not None else spec.base.seed)
        combos = [{path: draw(spec.space[path], rng) for path in paths} for _ in range(spec.max_trials)]
    trials = []
    for params in combos:
        body = base
        for path, value in params.items():
            body = with_value(body, path, value)
        trials.append(Trial(params, trial_spec(body, params, info, limits)))
    return trials


def grid(spec: SweepSpec, paths: list[str]) -> list[dict[str, ChoiceValue]]:
    for path in paths:
        if spec.space[path].choice is None:
            raise SweepError(("space", path), "a grid sweep takes `choice` lists only (use method random "
                             f"for {spec.space[path].kind})", spec.space[path].model_dump(exclude_none=True))
    lists = [spec.space[path].choice for path in paths]
    return [dict(zip(paths, values)) for values in itertools.islice(itertools.product(*lists), spec.max_trials)]


def draw(distribution: Distribution, rng: random.Random) -> ChoiceValue:
    if distribution.choice is not None:
        return distribution.choice[rng.randrange(len(distribution.choice))]
    if distribution.int_uniform is not None:
        low, high = distribution.int_uniform
        return rng.randint(low, high)
    if distribution.uniform is not None:
        low, high = distribution.uniform
        return low + (high - low) * rng.random()
    low, high = distribution.loguniform
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * rng.random())


def check_distribution(path: str, distribution: Distribution, kind: str, base: dict[str, Any],
                       info: DatasetInfo, limits: JobLimits) -> None:
    """The distribution fits the field, and every value it can give at its ends validates."""
    if kind == "categorical" and distribution.choice is None:
        raise SweepError(("space", path), f"{path!r} is categorical: search it with `choice`",
                         distribution.model_dump(exclude_none=True))
    if kind == "int" and distribution.kind in ("uniform", "loguniform"):
        raise SweepError(("space", path), f"{path!r} is an integer: search it with `int_uniform` or `choice`",
                         distribution.model_dump(exclude_none=True))
    ends = distribution.choice if distribution.choice is not None else getattr(distribution, distribution.kind)
    for value in ends:
        trial_spec(with_value(base, path, value), {path: value}, info, limits)


def trial_spec(body: dict[str, Any], params: dict[str, ChoiceValue], info: DatasetInfo,
               limits: JobLimits) -> JobSpec:
    """The resolved JobSpec of a trial; a SweepError at the first parameter when it is invalid."""
    blame = ("space", next(iter(params))) if len(params) == 1 else ("space",)
    try:
        return resolve_spec(JobSpec.model_validate(body), info, limits)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SweepError(blame, f"{_describe(params)} gives an invalid job spec: {where}: {first['msg']}",
                         _blamed_value(params)) from None
    except SpecMismatch as mismatch:
        where = ".".join(str(part) for part in mismatch.loc)
        raise SweepError(blame, f"{_describe(params)} gives a job spec that cannot train: {where}: "
                         f"{mismatch.message}", _blamed_value(params), mismatch.type) from None


def _describe(params: dict[str, ChoiceValue]) -> str:
    return ", ".join(f"{path}={value!r}" for path, value in params.items())


def _blamed_value(params: dict[str, ChoiceValue]) -> Any:
    return next(iter(params.values())) if len(params) == 1 else params


# ---------------------------------------------------------------- ASHA


def asha_rungs(grace_period: int, reduction_factor: int, epochs: int) -> tuple[int, ...]:
    """Epochs with a decision: grace·η^k below the trial's epochs (a trial at its last epoch ends anyway)."""
    rungs, milestone = [], grace_period
    while milestone < epochs:
        rungs.append(milestone)
        milestone *= reduction_factor
    return tuple(rungs)


def reward(value: float, mode: str) -> float:
    """Higher is better, as Ray Tune compares (metric × -1 for mode min)."""
    return value if mode == "max" else -value


def asha_continues(own: float, others: list[float], reduction_factor: int) -> bool:
    """Ray Tune's _Bracket.on_result: the cutoff is the (1 - 1/η) percentile (linear interpolation,
    NaNs ignored) of the rewards other trials recorded at the rung; none recorded: go on. A trial
    stops when its reward is strictly below the cutoff."""
    if not others:
        return True
    cutoff = float(np.nanpercentile(np.asarray(others, dtype=np.float64), (1 - 1 / reduction_factor) * 100))
    return not own < cutoff
