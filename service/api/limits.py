"""Cap request bodies while they stream in, before FastAPI parses or spools them.

Uploads (POST /v1/datasets) may carry Settings.max_upload_bytes plus the multipart framing;
predict requests (POST /v1/jobs/{id}/predict, up to MAX_PREDICT_ROWS rows) 16 MiB; every other
request is JSON and small. A Content-Length over the cap is refused before reading;
a body without one (chunked) is counted as it arrives and refused when it passes the cap.
"""
from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings, get_settings

UPLOAD_PATH = "/v1/datasets"
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the small form fields
MAX_JSON_BODY_BYTES = 1024 * 1024
MAX_PREDICT_BODY_BYTES = 16 * 1024 * 1024  # 10,000 rows of ~80 full-precision numbers
PREDICT_PATH = re.compile(r"/v1/jobs/[^/]+/predict/?")


def body_limit(scope: Scope) -> int:
    settings: Settings = getattr(scope["app"].state, "settings", None) or get_settings()
    if scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH:
        return settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    if scope["method"] == "POST" and PREDICT_PATH.fullmatch(scope["path"]):
        return MAX_PREDICT_BODY_BYTES
    return MAX_JSON_BODY_BYTES


class BodySizeLimit:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": _too_large(int(declared), limit)}, status_code=413)
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPExceptions met while reading the body; it becomes a 413
                    raise HTTPException(413, detail=_too_large(received, limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_large(size: int, limit: int) -> str:
    return f"request body of {size}+ bytes exceeds the limit of {limit} bytes"
