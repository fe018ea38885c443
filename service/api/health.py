"""/healthz (the process is up) and /readyz (database and broker reachable)."""
from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.deps import EnqueuerDep, StoreDep

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
BROKER_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    database: str
    broker: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(store: StoreDep, enqueuer: EnqueuerDep):
    database = _check(store.ping, "database")
    broker = _check(lambda: enqueuer.ping(timeout=BROKER_TIMEOUT_SECONDS), "broker")
    ready = database == "ok" and broker == "ok"
    body = Readiness(status="ok" if ready else "unavailable", database=database, broker=broker)
    return body if ready else JSONResponse(body.model_dump(), status_code=503)


def _check(probe, what: str) -> str:
    try:
        probe()
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"; say which
        log.warning("readiness: %s unreachable: %r", what, error)
        return f"error: {type(error).__name__}: {error}"[:500]
    return "ok"
