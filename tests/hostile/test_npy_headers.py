"""Malformed `.npy` headers (issue 11, defect 6): every header problem answers 400 naming the
array and the problem, never a 500 and never an object's repr or memory address; nothing is stored."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.utils.uploads import npy_bytes, raw_npy, zip_bytes

VALID_Y = npy_bytes(np.arange(4) % 2)
HEADERS = [  # (label, header text, a fragment the message must hold)
    ("unclosed bracket", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2", "found the end of the header"),
    ("unclosed brace", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), ", "expected a key"),
    ("unclosed quote", "{'descr': '<f8, 'fortran_order': False, 'shape': (4, 2), }", "malformed .npy header"),
    ("thousands of (", "(" * 9000, "expected '{'"),
    ("nested dicts", "{" * 3000, "expected a key"),
    ("a list, not a dict", "[1, 2, 3]", "expected '{'"),
    ("a call", "{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (4, 2), }", "descr"),
    ("a call as the shape", "{'descr': '<f8', 'fortran_order': False, 'shape': range(4), }", "shape"),
    ("a huge number", "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "9" * 5000 + ", 2), }", "digits"),
    ("a negative dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (-4, 2), }", "shape"),
    ("a float dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (4.5, 2), }", "shape"),
    ("a 1-tuple without comma", "{'descr': '<f8', 'fortran_order': False, 'shape': (8), }", "comma"),
    ("an unknown key", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), 'extra': 1, }", "unexpected key"),
    ("a missing key", "{'descr': '<f8', 'shape': (4, 2), }", "lacks fortran_order"),
    ("a repeated key", "{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }", "twice"),
    ("a structured descr", "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (4, 2), }", "structured"),
    ("a descr object", "{'descr': object, 'fortran_order': False, 'shape': (4, 2), }", "descr"),
    ("an unknown dtype", "{'descr': '<q99', 'fortran_order': False, 'shape': (4, 2), }", "not a dtype"),
    ("an object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (4, 2), }", "object arrays"),
    ("fortran_order a string", "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (4, 2), }", "True or False"),
    ("fortran_order a number", "{'descr': '<f8', 'fortran_order': 1, 'shape': (4, 2), }", "True or False"),
    ("not ASCII", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), '\u00e9': 1}", "not ASCII"),
    ("empty", "", "expected '{'"),
]


def stored(api):
    return api.client.get("/v1/datasets").json(), api.stored_dataset_files()


def assert_refused(response, fragment):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "file"
    assert body["detail"].startswith("X: ") and fragment in body["detail"], body["detail"]
    assert not re.search(r"0x[0-9a-f]{6,}|object at|<ast\.", body["detail"])
    assert len(body["detail"]) < 300  # the hostile header is never echoed whole


@pytest.mark.parametrize("label, header, fragment", HEADERS, ids=[label for label, _, _ in HEADERS])
def test_malformed_headers_answer_400_with_a_message(api, label, header, fragment):
    before = stored(api)
    archive = zip_bytes({"X.npy": raw_npy(header, b"\0" * 64), "y.npy": VALID_Y})
    response = api.client.post("/v1/datasets", files={"file": ("bad.npz", archive)})
    assert_refused(response, fragment)
    assert stored(api) == before


@pytest.mark.parametrize("label, npy, fragment", [
    ("no magic", b"NOTNUMPY" + b"\0" * 120, "magic"),
    ("cut after the magic", b"\x93NUMPY\x01\x00", "cut short"),
    ("version 9.9", b"\x93NUMPY\x09\x09" + b"\0" * 120, "version 9.9"),
    ("a header longer than the member", b"\x93NUMPY\x01\x00\xff\x00{'descr'", "cut short"),
    ("a 4 GB header length (version 2.0)", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{", "at most"),
    ("binary header", raw_npy(b"{\xff\xfe\x00}"), "not ASCII"),
], ids=lambda value: value if isinstance(value, str) and " " in value else None)
def test_broken_framing_answers_400(api, label, npy, fragment):
    before = stored(api)
    response = api.client.post("/v1/datasets", files={"file": ("bad.npz", zip_bytes({"X.npy": npy, "y.npy": VALID_Y}))})
    assert_refused(response, fragment)
    assert stored(api) == before


def test_a_header_numpy_writes_is_still_accepted_in_every_layout(api):
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    for name, array in (("c", X), ("fortran", np.asfortranarray(X)), ("big-endian", X.astype(">f4"))):
        response = api.client.post("/v1/datasets", files={"file": (f"{name}.npz", zip_bytes(
            {"X.npy": npy_bytes(array), "y.npy": VALID_Y}))})
        assert response.status_code == 201, response.text
        assert response.json()["rows"] == 4
