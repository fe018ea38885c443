"""Fuzz every operation of the OpenAPI schema with schemathesis: no 5xx, and every answer (status,
content type, headers, body) is one the schema declares. Auth is on; the cases carry a live key,
and schemathesis also checks that requests without it are refused.

Bounded: a fixed number of examples per operation, derandomized (the same cases every run), on
the ASGI app in-process with a real SQLite store and the embedded broker.
"""
from __future__ import annotations

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


@pytest.fixture
def fuzz_token(settings_factory, sqlite_database_url, clock):
    """Points CURRENT_APP at an app with auth on, over a fresh SQLite store; a live key of owner 'fuzzer'."""
    settings = settings_factory(database_url=sqlite_database_url, auth_required=True)
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
