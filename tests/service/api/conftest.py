"""`api`: the app on a migrated database (SQLite, then PostgreSQL) with an embedded SQLAlchemy
broker in tmp_path; `make_api(**settings)` for other limits."""
from __future__ import annotations

import warnings
from contextlib import ExitStack

import pytest

with warnings.catch_warnings():  # starlette's TestClient warns about httpx; the API under test is the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from service.main import create_app
from service.queue import Enqueuer, celery_client
from service.store import Store
from tests.utils.api import Api


@pytest.fixture
def make_api(make_store):
    resources = ExitStack()

    def make(*, store: Store | None = None, enqueuer: Enqueuer | None = None, **overrides) -> Api:
        store = store or make_store(**overrides)
        if enqueuer is None:
            enqueuer = Enqueuer(celery_client(store.settings))
            resources.callback(enqueuer.close)
        app = create_app(store.settings, store=store, enqueuer=enqueuer)
        client = resources.enter_context(TestClient(app))
        return Api(client=client, store=store, settings=store.settings)

    with resources:
        yield make


@pytest.fixture
def api(make_api) -> Api:
    return make_api()
