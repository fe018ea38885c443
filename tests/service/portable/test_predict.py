"""Predict's body parsing (fast path and the row-by-row explanation) and the bounded LRU cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from service.portable.cache import LRUCache
from service.portable.predict import InvalidInputs, as_matrix, parse_rows


def matrix(body: bytes, width: int, max_rows: int = 100) -> np.ndarray:
    return as_matrix(parse_rows(body, max_rows), width, body)


def test_rows_become_one_float32_matrix():
    X = matrix(b'{"inputs": [[1, 2.5, -3e-1], [0, 1e30, 7]]}', 3)
    assert X.dtype == np.float32 and X.shape == (2, 3)
    np.testing.assert_array_equal(X, np.array([[1, 2.5, -0.3], [0, 1e30, 7]], np.float32))


def test_an_odd_looking_but_valid_body_is_accepted_after_the_row_by_row_check():
    # an escaped key has no more quotes, but a duplicated key or a string elsewhere would send
    # the body down the slow path, which must accept what is valid
    assert matrix(b'{"\\u0069nputs": [[1, 2]]}', 2).tolist() == [[1, 2]]
    assert matrix(b'{"inputs": [[9, 9]], "inputs": [[1, 2]]}', 2).tolist() == [[1, 2]]


@pytest.mark.parametrize("row, loc, kind", [
    ([1, 2, 3], ("body", "inputs", 1), "row_width"),
    ("12", ("body", "inputs", 1), "list_type"),
    ([1, "2"], ("body", "inputs", 1, 1), "float_type"),
    ([False, 2], ("body", "inputs", 1, 0), "float_type"),
    ([1, None], ("body", "inputs", 1, 1), "float_type"),
    ([1, {"a": 1}], ("body", "inputs", 1, 1), "float_type"),
    ([1, -3.5e38], ("body", "inputs", 1, 1), "finite_number"),
])
def test_the_first_bad_value_is_named(row, loc, kind):
    body = json.dumps({"inputs": [[0, 0], row]}).encode()
    with pytest.raises(InvalidInputs) as raised:
        matrix(body, 2)
    (error,) = raised.value.errors
    assert (error["loc"], error["type"]) == (loc, kind)
    json.dumps(error, allow_nan=False)  # the 422 body stays valid JSON


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", str(10 ** 400).encode()])
def test_numbers_json_does_not_have_are_refused_where_they_start(number):
    body = b'{"inputs": [[0, %s]]}' % number
    with pytest.raises(InvalidInputs) as raised:
        matrix(body, 2)
    (error,) = raised.value.errors
    start = body.index(number)
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    assert start <= error["loc"][1] <= start + 1  # at the token (orjson may point past its sign)


def test_at_most_ten_problems_are_reported():
    body = json.dumps({"inputs": [[1]] * 50}).encode()
    with pytest.raises(InvalidInputs) as raised:
        matrix(body, 2)
    assert len(raised.value.errors) == 10 and raised.value.errors[-1]["loc"] == ("body", "inputs", 9)


def test_the_lru_cache_keeps_the_most_recently_used():
    cache: LRUCache[int] = LRUCache(2)
    builds = []

    def build(value):
        return lambda: builds.append(value) or value

    assert cache.get_or_build("a", build(1)) == 1
    assert cache.get_or_build("b", build(2)) == 2
    assert cache.get_or_build("a", build(99)) == 1  # a hit: a becomes the most recent
    cache.get_or_build("c", build(3))  # evicts b
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
    assert builds == [1, 2, 3]
    with pytest.raises(ValueError):
        LRUCache(0)
