"""Typed dependencies: handlers read `store: StoreDep`, `settings: SettingsDep`, ...

Everything comes from `app.state`, which the app's lifespan fills (see service.main), so nothing
is built at import time and tests pass their own store and enqueuer. The dependencies are
`async def` because none of them blocks: FastAPI runs a plain `def` dependency in the thread
pool, and three thread hops per request cost more than the poll they serve.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.auth import CHALLENGE, OWNER_STATE_KEY
from service.api.openapi import query_parameters
from service.config import Settings
from service.events import JobEvents
from service.queue import Enqueuer
from service.specs import unstorable_text
from service.store import Store

# Declares the scheme in OpenAPI; service.api.auth.BearerAuth has already checked the token.
bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey",
    description="An API key from `backprop keys create --owner NAME`: `Authorization: Bearer bpk_...`. "
    "Not needed when the server runs open on a loopback address (`backprop dev`).",
)


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_enqueuer(request: Request) -> Enqueuer:
    return request.app.state.enqueuer


async def get_job_events(request: Request) -> JobEvents:
    return request.app.state.job_events


async def get_owner(request: Request,
              _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]) -> str | None:
    """The caller's owner name, set by the BearerAuth middleware; None when the API runs open."""
    owner = request.scope.get("state", {}).get(OWNER_STATE_KEY)
    if owner is None and request.app.state.auth_enabled:
        # unreachable behind BearerAuth; refuse rather than serve every owner's data if it is missing
        raise HTTPException(401, detail="an API key is required", headers={"WWW-Authenticate": CHALLENGE})
    return owner


async def strict_query(request: Request) -> None:
    """Refuse unknown and repeated query parameters (422): `?stauts=queued` silently ignored, or
    the last of `?status=queued&status=failed` silently taken, would answer another question.
    Path and query text holding NUL is refused too (422 `text_unstorable`): no id or name holds one,
    and PostgreSQL cannot even compare with it."""
    known = query_parameters(request.app, request.method, request.url.path)
    errors = []
    for where, items in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for key, value in items:
            reason = unstorable_text(str(value))
            if reason is not None:
                errors.append({"type": "text_unstorable", "loc": (where, key), "msg": reason, "input": value})
    for key in dict.fromkeys(request.query_params.keys()):
        values = request.query_params.getlist(key)
        if known is not None and key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            errors.append({"type": "unknown_parameter", "loc": ("query", key),
                           "msg": f"unknown query parameter (known: {allowed})", "input": values[-1]})
        elif len(values) > 1:
            errors.append({"type": "multiple_values", "loc": ("query", key), "msg": "give this parameter once",
                           "input": values})
    if errors:
        raise RequestValidationError(errors)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
EnqueuerDep = Annotated[Enqueuer, Depends(get_enqueuer)]
JobEventsDep = Annotated[JobEvents, Depends(get_job_events)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
