"""Domain errors to HTTP: NotFound 404, Conflict 409, SpecMismatch and InvalidCursor 422 (in
FastAPI's own 422 shape), UploadError 400/413."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.specs import SpecMismatch
from service.store import Conflict, InvalidCursor, NotFound
from service.uploads import UploadError


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(SpecMismatch, _spec_mismatch)
    app.add_exception_handler(UploadError, _upload_error)
    app.add_exception_handler(InvalidCursor, _invalid_cursor)


async def _not_found(request: Request, error: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=404)


async def _conflict(request: Request, error: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=409)


async def _spec_mismatch(request: Request, error: SpecMismatch) -> JSONResponse:
    # submit_job turns these into a RequestValidationError itself (with the offending input);
    # this is the fallback for any other path, in the same shape
    return JSONResponse(status_code=422, content={"detail": [{
        "type": "spec_mismatch", "loc": ["body", *error.loc], "msg": error.message, "input": None,
    }]})


async def _upload_error(request: Request, error: UploadError) -> JSONResponse:
    return JSONResponse({"detail": error.message, "field": error.field}, status_code=error.status_code)



async def _invalid_cursor(request: Request, error: InvalidCursor) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [{
        "type": "invalid_cursor", "loc": ["query", "cursor"], "msg": str(error),
        "input": request.query_params.get("cursor"),
    }]})
