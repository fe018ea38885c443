"""Domain errors to HTTP: NotFound 404, Conflict 409, QueueFull 429, SpecMismatch (LimitExceeded)
and InvalidCursor 422 (in FastAPI's own 422 shape), UploadError 400/413.

Every 422 body encodes, whatever the input it echoes: `encodable` writes a non-finite number as
the JSON token the caller sent ("NaN", "Infinity", "-Infinity"), a lone surrogate as U+FFFD, and
anything nested deeper than MAX_ECHO_DEPTH as "…".

The response models below document those bodies in OpenAPI (`responses=` of each route)."""
from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.openapi import operations_for
from service.specs import SpecMismatch
from service.store import ArtifactError, Conflict, InvalidCursor, NotFound, QueueFull
from service.uploads import UploadError

log = logging.getLogger(__name__)

MAX_ECHO_DEPTH = 32  # nesting of an echoed input kept in a 422 body; deeper parts become "…"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
NON_FINITE_TOKENS = {math.inf: "Infinity", -math.inf: "-Infinity"}


class Message(BaseModel):
    """The body of 400, 401, 404, 409, 413 and 429 answers."""

    detail: str = Field(examples=["job 'f00' not found"])


class UploadProblem(Message):
    """The body of a 400 (or 413) on an upload: what is wrong, and with which form field."""

    field: str = Field(examples=["file"], description="the form field at fault: `file` or `target`")


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries with a model: error_responses(404, 409, _409="the job has no model")."""
    defaults = {
        400: "the body could not be read (not UTF-8, or broken framing)",
        401: "no API key, or one that is unknown or revoked (`WWW-Authenticate: Bearer`)",
        404: "not found, or owned by someone else",
        409: "the resource is not in a state that allows this",
        413: "the request body is over its cap",
        429: "too many queued jobs for this owner (MAX_QUEUED_JOBS_PER_OWNER)",
    }
    return {status: {"model": Message, "description": descriptions.get(f"_{status}", defaults[status])}
            for status in statuses}


def encodable(value: Any, depth: int = 0) -> Any:
    """`value` as something JSON (and UTF-8) can always hold; see the module's docstring."""
    if depth > MAX_ECHO_DEPTH:
        return "…"
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE_TOKENS.get(value, "NaN")
    if isinstance(value, dict):
        return {encodable(str(key), depth + 1): encodable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encodable(item, depth + 1) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, BaseModel):
        return encodable(jsonable_encoder(value), depth + 1)
    return encodable(str(value), depth)  # an exception in `ctx`, a Decimal, ...


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(SpecMismatch, _spec_mismatch)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(InvalidCursor, _invalid_cursor)
    app.add_exception_handler(ArtifactError, _artifact_missing)
    app.add_exception_handler(StarletteHTTPException, _http_exception)


async def _http_exception(request: Request, error: StarletteHTTPException):
    if error.status_code == 405:
        # Starlette's Allow names the methods of the first route matching the path only, and GET
        # and POST /v1/jobs are two routes: answer with every method the schema has for the path
        allowed = sorted(operations_for(request.app, request.url.path))
        if allowed:
            error.headers = {**(error.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, error)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": encodable(error.errors())}, status_code=422)


async def _not_found(request: Request, error: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=404)


async def _conflict(request: Request, error: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=409)


async def _queue_full(request: Request, error: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=429)


async def _spec_mismatch(request: Request, error: SpecMismatch) -> JSONResponse:
    # submit_job turns these into a RequestValidationError itself (with the offending input);
    # this is the fallback for any other path, in the same shape
    return JSONResponse(status_code=422, content={"detail": [{
        "type": error.type, "loc": ["body", *error.loc], "msg": error.message, "input": None,
    }]})


async def _artifact_missing(request: Request, error: ArtifactError) -> JSONResponse:
    # a row names an object the artifact store cannot give: not the caller's fault, and not
    # something a retry of the same request fixes before an operator looks
    log.error("artifact missing for %s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": f"the stored file is unavailable: {error}"}, status_code=503)


async def _upload_error(request: Request, error: UploadError) -> JSONResponse:
    return JSONResponse({"detail": error.message, "field": error.field}, status_code=error.status_code)


async def _invalid_cursor(request: Request, error: InvalidCursor) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [{
        "type": "invalid_cursor", "loc": ["query", "cursor"], "msg": str(error),
        "input": encodable(request.query_params.get("cursor")),
    }]})
