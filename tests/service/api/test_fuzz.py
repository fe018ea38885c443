"""Fuzz every operation of the OpenAPI schema with schemathesis: no 5xx, and every answer (status,
content type, headers, body) is one the schema declares. Auth is on; the cases carry a live key,
and schemathesis also checks that requests without it are refused.

A second run (issue 11) takes the schema's cases and makes them hostile before sending: every
number of a JSON body non-finite (sent as NaN/Infinity tokens, which Python's json reads), every
string unusual Unicode (NUL and other controls, lone surrogates in JSON, right-to-left and
zero-width marks, combining marks, private use, astral characters), the same text in query, path
and form fields, on SQLite and PostgreSQL (which refuses NUL in text): still no 5xx, and the
answers conform to the schema.

Bounded: a fixed number of examples per operation, derandomized (the same cases every run), on
the ASGI app in-process with a real SQLite store and the embedded broker.
"""
from __future__ import annotations

import json
import math
import random
import warnings

import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, settings

from service.config import Settings
from service.main import create_app
from service.queue import Enqueuer, celery_client
from service.store import ApiKeys, Store
from tests.utils.db import SequentialIds

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLES_PER_OPERATION = 30
HOSTILE_EXAMPLES_PER_OPERATION = 8  # per database

pytestmark = pytest.mark.timeout(300)


class CurrentApp:
    """The ASGI app schemathesis talks to: forwards each request to the running test's app.

    Its lifespan is the test fixture's business (each test has its own store), so lifespan events
    are answered here and never forwarded."""

    def __init__(self):
        self.target = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.target(scope, receive, send)


CURRENT_APP = CurrentApp()
# The app's own schema: app.openapi() runs no lifespan and touches no database.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())
schema.app = CURRENT_APP
# NUL is valid JSON and URL text but refused by the contract (422 `text_unstorable`), which the
# schema cannot say for parameters: the schema-driven run leaves it to the hostile run below
schema.config.generation.update(allow_x00=False)


def token_for_app(settings_factory, database_url, clock):
    """Points CURRENT_APP at an app with auth on, over a fresh store; a live key of owner 'fuzzer'."""
    settings = settings_factory(database_url=database_url, auth_required=True)
    store = Store(settings, clock=clock, new_id=SequentialIds())
    enqueuer = Enqueuer(celery_client(settings))
    app = create_app(settings, store=store, enqueuer=enqueuer)
    try:
        with TestClient(app):  # runs the lifespan
            CURRENT_APP.target = app
            yield ApiKeys(store).create("fuzzer").token
    finally:
        CURRENT_APP.target = None
        enqueuer.close()
        store.dispose()


@pytest.fixture
def fuzz_token(settings_factory, sqlite_database_url, clock):
    yield from token_for_app(settings_factory, sqlite_database_url, clock)


@pytest.fixture
def any_database_token(settings_factory, database_url, clock):
    yield from token_for_app(settings_factory, database_url, clock)


# Answers to schema-valid requests that the schema cannot foresee, all documented: an upload's
# content (a valid .npz or .csv) is checked by the server (400/413); a spec that fits the schema
# may not fit its dataset or a deployment's tighter caps, a sweep's space may draw values that give
# no valid job spec, and a cursor is an opaque token (422).
SEMANTIC_ERRORS = {("POST", "/v1/datasets"): {400, 413}, ("POST", "/v1/jobs"): {422},
                   ("GET", "/v1/jobs"): {422}, ("POST", "/v1/sweeps"): {422}, ("GET", "/v1/sweeps"): {422}}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_against_its_schema(case, fuzz_token):
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    semantic = SEMANTIC_ERRORS.get((case.method.upper(), case.path), set())
    if not semantic:
        case.call_and_validate(headers=headers)
        return
    response = case.call(headers=headers)
    # every other check still runs; only "schema-valid data must be accepted" yields to the
    # documented semantic errors, and only when the answer is one of them
    excluded = [checks.positive_data_acceptance] if response.status_code in semantic else []
    case.validate_response(response, headers=headers, excluded_checks=excluded,
                           transport_kwargs={"headers": headers})


# ---------------------------------------------------------------- hostile values

UNUSUAL_CHARACTERS = [
    "\x00", "\x01", "\x1b", "\x7f", "\x85",  # NUL and other controls
    "\ud800", "\udbff", "\udc00", "\udfff",  # lone surrogates (JSON escapes them; not UTF-8)
    "\u202e", "\u200f", "\u061c", "\u200b", "\u200d", "\u2060", "\ufeff",  # bidi, zero-width, BOM
    "\u0301", "\u0336", "\u20dd", "\u2028", "\u2029",  # combining marks, line/paragraph separators
    "\ue000", "\U000f0000", "\uffff", "\ufffe", "\U0001f600", "\U0010ffff",  # private use, noncharacters, astral
]
NON_FINITE = [math.nan, math.inf, -math.inf]


def hostile(value, draw_text, draw_number):
    """`value` (a JSON body, form or parameter value) with each string and number replaced."""
    if isinstance(value, dict):
        return {key: hostile(item, draw_text, draw_number) for key, item in value.items()}
    if isinstance(value, list):
        return [hostile(item, draw_text, draw_number) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)):
        return draw_number()
    if isinstance(value, str):
        return draw_text()
    return value


def without_surrogates(text: str) -> str:
    # a URL or a multipart form carries UTF-8 bytes, which cannot hold a lone surrogate: NUL instead
    return "".join("\x00" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


HOSTILE_CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                  checks.response_headers_conformance, checks.response_schema_conformance]


@schema.parametrize()
@settings(max_examples=HOSTILE_EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_hostile_numbers_and_unicode_through_every_operation(case, any_database_token):
    headers = {"Authorization": f"Bearer {any_database_token}"}
    # hostile values drawn from the case itself: the same cases, the same values, every run
    rng = random.Random(f"{case.method} {case.path} {case.path_parameters} {case.query} {case.body!r}")

    def text():
        return "".join(rng.choice(UNUSUAL_CHARACTERS) if rng.random() < 0.6 else rng.choice("aZ9 ")
                       for _ in range(rng.randint(1, 12)))

    def url_text():
        return without_surrogates(text())

    def number():
        return rng.choice(NON_FINITE)

    if case.path_parameters:
        case.path_parameters = {key: url_text() for key in case.path_parameters}
    if case.query:
        case.query = {key: hostile(value, url_text, lambda: rng.choice(["NaN", "-Infinity", "1e400"]))
                      for key, value in case.query.items()}
    kwargs = {}
    if isinstance(case.body, (dict, list)) and case.media_type == "application/json":
        # sent as written: NaN/Infinity tokens and \ud800 escapes, which no JSON encoder of a client emits
        raw = json.dumps(hostile(case.body, text, number), allow_nan=True, ensure_ascii=True)
        kwargs = {"data": raw.encode(), "headers": {**headers, "Content-Type": "application/json"}}
    elif isinstance(case.body, dict):  # a multipart form: its text fields, not the file
        case.body = hostile(case.body, url_text, lambda: rng.choice(["NaN", "Infinity"]))
    response = case.call(**({"headers": headers} | kwargs))
    case.validate_response(response, checks=HOSTILE_CHECKS, headers=headers, transport_kwargs={"headers": headers})
