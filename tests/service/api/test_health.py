"""/healthz and /readyz against a real database and a real (or really unreachable) broker."""
from __future__ import annotations

import pytest

from service.queue import Enqueuer, celery_client
from service.store import Store

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_healthz(api):
    response = api.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(api):
    response = api.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.allows_5xx  # the probe's 503 is its answer
def test_readyz_503_when_the_broker_is_unreachable(make_api, settings_factory):
    dead = Enqueuer(celery_client(settings_factory(broker_url=DEAD_REDIS)))
    try:
        api = make_api(enqueuer=dead)
        response = api.client.get("/readyz")
    finally:
        dead.close()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["broker"].startswith("error:")


@pytest.mark.allows_5xx  # the probe's 503 is its answer
def test_readyz_503_when_the_database_is_unreachable(make_api, settings_factory):
    unreachable = Store(settings_factory(database_url="postgresql://nobody@127.0.0.1:1/none"))
    try:
        response = make_api(store=unreachable).client.get("/readyz")
    finally:
        unreachable.dispose()
    assert response.status_code == 503
    assert response.json()["database"].startswith("error:") and response.json()["broker"] == "ok"


def test_blocking_work_runs_on_api_threads_threads(make_api):
    """Sync handlers and dependencies share API_THREADS threads per process (not anyio's 40)."""
    import anyio.to_thread

    api = make_api(api_threads=3)
    assert api.client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens) == 3
    assert api.client.get("/readyz").status_code == 200
