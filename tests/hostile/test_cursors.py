"""Forged list cursors (issue 11, defect 3): any cursor the API did not issue answers 422
`invalid_cursor` naming the parameter, never a 500, and nothing stored changes."""
from __future__ import annotations

import base64
import json

import pytest

from tests.utils.api import job_body


def forge(parts) -> str:
    raw = parts if isinstance(parts, str) else json.dumps(parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


JOB_ID = "0" * 31 + "1"
CREATED_AT = [  # (label, cursor) for ?order_by=created_at&order=desc
    ("naive datetime", forge(["created_at", True, "2026-01-01T00:00:00", JOB_ID])),
    ("out of range after its offset", forge(["created_at", True, "9999-12-31T23:59:59-23:59", JOB_ID])),
    ("before year 1 after its offset", forge(["created_at", True, "0001-01-01T00:00:00+23:59", JOB_ID])),
    ("not a datetime", forge(["created_at", True, "yesterday", JOB_ID])),
    ("a number for the datetime", forge(["created_at", True, 1.5e300, JOB_ID])),
    ("null datetime", forge(["created_at", True, None, JOB_ID])),
    ("deeply nested JSON", forge("[" * 5000 + "]" * 5000)),
    ("nested value", forge(["created_at", True, [[[["2026-01-01T00:00:00+00:00"]]]], JOB_ID])),
    ("object instead of a list", forge({"order_by": "created_at"})),
    ("three parts", forge(["created_at", True, "2026-01-01T00:00:00+00:00"])),
    ("id that is not hex", forge(["created_at", True, "2026-01-01T00:00:00+00:00", "' OR 1=1 --"])),
    ("id of another type", forge(["created_at", True, "2026-01-01T00:00:00+00:00", 7])),
    ("direction as a string", forge(["created_at", "true", "2026-01-01T00:00:00+00:00", JOB_ID])),
    ("not base64", "%%%%"),
    ("base64 of binary", base64.urlsafe_b64encode(b"\xff\xfe\x00\x01").decode()),
    ("base64 of text", forge("hello")),
    ("far too long", "A" * 20_000),
]
BEST_VAL_LOSS = [  # for ?order_by=best_val_loss&order=desc
    ("integer too large for a float", forge('["best_val_loss",true,' + "9" * 400 + f',"{JOB_ID}"]')),
    ("NaN token", forge(f'["best_val_loss",true,NaN,"{JOB_ID}"]')),
    ("Infinity token", forge(f'["best_val_loss",true,-Infinity,"{JOB_ID}"]')),
    ("boolean value", forge(["best_val_loss", True, True, JOB_ID])),
    ("string value", forge(["best_val_loss", True, "0.5", JOB_ID])),
]


def assert_invalid_cursor(response, cursor):
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "invalid_cursor" and error["loc"] == ["query", "cursor"]
    assert "cursor" in error["msg"]


@pytest.fixture
def listed(api):
    for name in ("a", "b", "c"):
        assert api.submit(**job_body("xor", name=name)).status_code == 202
    return api


@pytest.mark.parametrize("label, cursor", CREATED_AT, ids=[label for label, _ in CREATED_AT])
def test_forged_created_at_cursors_answer_422(listed, label, cursor):
    before = listed.client.get("/v1/jobs", params={"limit": 500}).json()
    response = listed.client.get("/v1/jobs", params={"cursor": cursor, "limit": 2})
    assert_invalid_cursor(response, cursor)
    assert listed.client.get("/v1/jobs", params={"limit": 500}).json() == before


@pytest.mark.parametrize("label, cursor", BEST_VAL_LOSS, ids=[label for label, _ in BEST_VAL_LOSS])
def test_forged_metric_cursors_answer_422(listed, label, cursor):
    response = listed.client.get("/v1/jobs", params={"cursor": cursor, "order_by": "best_val_loss", "limit": 2})
    assert_invalid_cursor(response, cursor)


# a NUL in any parameter answers text_unstorable first (tests/hostile/test_error_bodies.py)
@pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "e30%0A", "%E2%80%AE" * 10])
def test_undecodable_and_control_characters_answer_422(listed, raw):
    response = listed.client.get(f"/v1/jobs?limit=2&cursor={raw}")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "invalid_cursor"


def test_a_cursor_of_another_ordering_is_refused_and_issued_ones_still_work(listed):
    issued = listed.client.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
    response = listed.client.get("/v1/jobs", params={"cursor": issued, "limit": 1, "order": "asc"})
    assert_invalid_cursor(response, issued)
    assert "another ordering" in response.json()["detail"][0]["msg"]
    page = listed.client.get("/v1/jobs", params={"cursor": issued, "limit": 5})
    assert page.status_code == 200 and len(page.json()["items"]) == 2
    by_loss = listed.client.get("/v1/jobs", params={"order_by": "best_val_loss", "limit": 1}).json()["next_cursor"]
    page = listed.client.get("/v1/jobs", params={"order_by": "best_val_loss", "limit": 5, "cursor": by_loss})
    assert page.status_code == 200 and len(page.json()["items"]) == 2  # null best values sort last
