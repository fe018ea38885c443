"""Predict: JSON rows in, the engine's outputs out.

Per request the cost is one `orjson.loads`, one `np.asarray` over the parsed lists, one forward
pass and one `orjson.dumps` of the arrays (float32 written in their shortest exact form): no
Python object per value is validated on the fast path. Only when something is wrong does
`problems` walk the rows to say which value of which row, in FastAPI's 422 shape. orjson reads
strict JSON: `NaN`, `Infinity` and numbers beyond float64 (1e999) are not JSON and are refused as
`json_invalid` (Python's json module would read them).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

from worker.nn import Model
from worker.nn.metrics import predicted_classes

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_REPORTED_PROBLEMS = 10


class InvalidInputs(ValueError):
    """A request the model cannot run on; `errors` are FastAPI-style 422 entries."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(errors[0]["msg"])
        self.errors = errors


class UnreadableBody(ValueError):
    """Not UTF-8: answered 400, as FastAPI does for its own bodies."""


def _error(type_: str, loc: tuple, msg: str, input_: Any = None, **ctx) -> dict[str, Any]:
    error = {"type": type_, "loc": ("body", *loc), "msg": msg, "input": input_}
    if ctx:
        error["ctx"] = ctx
    return error


def parse_rows(raw: bytes, max_rows: int) -> list:
    """The `inputs` list of a body `{"inputs": [[...], ...]}`: at least one row, at most `max_rows`."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableBody("There was an error parsing the body") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidInputs([_error("json_invalid", (error.pos,), "JSON decode error", {}, error=error.msg)]) from None
    if not isinstance(body, dict):
        raise InvalidInputs([_error("model_attributes_type", (), "Input should be an object like "
                                    '{"inputs": [[...], ...]}', None)])
    extra = [key for key in body if key != "inputs"]
    if extra:
        raise InvalidInputs([_error("extra_forbidden", (key,), "Extra inputs are not permitted", None)
                             for key in extra[:MAX_REPORTED_PROBLEMS]])
    if "inputs" not in body:
        raise InvalidInputs([_error("missing", ("inputs",), "Field required", None)])
    rows = body["inputs"]
    if not isinstance(rows, list):
        raise InvalidInputs([_error("list_type", ("inputs",), "Input should be a list of rows", None)])
    if not rows:
        raise InvalidInputs([_error("too_short", ("inputs",), "give at least one row", [], min_length=1)])
    if len(rows) > max_rows:
        raise InvalidInputs([_error("limit_exceeded", ("inputs",),
                                    f"{len(rows)} rows exceed the cap of {max_rows} (MAX_PREDICT_ROWS)", None)])
    return rows


def as_matrix(rows: list, width: int, raw: bytes) -> np.ndarray:
    """The rows as a float32 (rows, width) array; InvalidInputs names the row, and the value, at fault."""
    try:
        X = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged rows, a list or object inside, a huge int
        X = None
    # np.asarray turns "1.5" and true into numbers and None into NaN: refuse strings and literals by
    # looking at the body itself (its only string may be the key "inputs")
    if (X is None or X.ndim != 2 or X.shape[1] != width or raw.count(b'"') != 2
            or b"true" in raw or b"false" in raw or b"null" in raw or not np.abs(X).max() <= FLOAT32_MAX):
        found = problems(rows, width)
        if found:
            raise InvalidInputs(found)
        X = np.asarray(rows, dtype=np.float64)  # every value checked: the body merely looked odd
    return X.astype(np.float32)


def problems(rows: list, width: int) -> list[dict[str, Any]]:
    """What is wrong with the rows, in order, at most MAX_REPORTED_PROBLEMS entries."""
    found: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if len(found) >= MAX_REPORTED_PROBLEMS:
            break
        if not isinstance(row, list):
            found.append(_error("list_type", ("inputs", i), f"row {i} should be a list of {width} numbers", None))
            continue
        if len(row) != width:
            found.append(_error("row_width", ("inputs", i),
                                f"row {i} has {len(row)} values; the model takes {width} inputs", None,
                                expected=width, found=len(row)))
            continue
        for j, value in enumerate(row):
            problem = _value_problem(value)
            if problem:
                type_, what = problem
                shown = value if type_ == "float_type" and not isinstance(value, (list, dict)) else None
                found.append(_error(type_, ("inputs", i, j), f"row {i}, column {j}: {what}", shown))
                break
    return found


def _value_problem(value: Any) -> tuple[str, str] | None:
    if type(value) not in (int, float):  # bool is an int subclass, and refused
        return "float_type", f"{json.dumps(value)[:40]} is not a number"
    try:
        magnitude = abs(float(value))
    except OverflowError:
        magnitude = math.inf
    if not magnitude <= FLOAT32_MAX:
        return "finite_number", f"{value!r:.40} is not a finite float32 number"
    return None


def prediction(model: Model, X: np.ndarray) -> bytes:
    """The JSON answer: `outputs` (the output layer, rows x outputs; for an autoencoder the
    reconstruction in the inputs' units, as Model.predict) and, for classifiers, `classes`
    (each row's label, as Model.predict), `probabilities` (as Model.predict_proba) and `labels`
    (the probabilities' column order)."""
    if model.is_classifier:
        out = model.network.predict_raw(model.prepare(X))
    else:  # Model.predict: values (an autoencoder's in the inputs' units), always rows x outputs here
        out = model.predict(X).reshape(len(X), -1)
    if not (np.isfinite(out.min()) and np.isfinite(out.max())):
        raise InvalidInputs([_error("finite_number", ("inputs",), "the model's outputs overflow float32 "
                                    "for these inputs", None)])
    body: dict[str, Any] = {"outputs": out}
    if model.is_classifier:
        body["classes"] = model.classes[predicted_classes(out)].tolist()
        body["probabilities"] = np.concatenate([1.0 - out, out], axis=1) if out.shape[1] == 1 else out
        body["labels"] = model.meta["classes"]
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
