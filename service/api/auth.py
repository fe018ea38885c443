"""Bearer-token authentication, checked before a request's body is read.

An ASGI middleware rather than only a FastAPI dependency: FastAPI reads (and spools) a form body
before it runs dependencies, so a dependency alone would let anyone without a key stream a
200 MB upload at the server. The middleware answers 401 first and leaves the owner in the
request's state, where `OwnerDep` (service.api.deps) picks it up. /healthz, /readyz and the API
docs stay open. With authentication off (Settings.auth_enabled false: loopback only) the owner
is None, which the store reads as "every owner".
"""
from __future__ import annotations

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/", "/compare"})
# the dashboard's pages and files (service.api.dashboard): static, no data; their scripts call /v1 with a key
OPEN_PREFIXES = ("/jobs/", "/static/")
OWNER_STATE_KEY = "owner"
CHALLENGE = 'Bearer realm="backprop"'


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(detail: str, *, invalid_token: bool) -> JSONResponse:
    # RFC 6750: no credentials → a bare challenge; bad credentials → error="invalid_token"
    challenge = f'{CHALLENGE}, error="invalid_token"' if invalid_token else CHALLENGE
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": challenge})


class BearerAuth:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(name == b"authorization" for name, _ in scope["headers"]) > 1:
            # which one is meant? a proxy and a client may each have added one: refuse, never guess
            response = JSONResponse({"detail": "the request carries more than one Authorization header; send one"},
                                    status_code=400)
            await response(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if not state.auth_enabled:
            await self.app(scope, receive, send)
            return
        token = bearer_token(Headers(scope=scope))
        if token is None:
            response = unauthorized("an API key is required: send `Authorization: Bearer <key>` "
                                    "(keys come from `backprop keys create --owner NAME`)", invalid_token=False)
            await response(scope, receive, send)
            return
        owner = await anyio.to_thread.run_sync(state.keys.authenticate, token)
        if owner is None:
            await unauthorized("the API key is not valid (unknown, malformed or revoked)",
                               invalid_token=True)(scope, receive, send)
            return
        scope.setdefault("state", {})[OWNER_STATE_KEY] = owner
        await self.app(scope, receive, send)
