"""No 5xx from any request in the suite (issue 11): every in-process app's answers are watched
at Starlette's outermost middleware, and the logs of `backprop api` processes started by the
test harness are scanned when their stack stops. tests/conftest.py fails a test that saw one
unless it is marked `@pytest.mark.allows_5xx` (the few that provoke a 503 on purpose).

Watching costs one wrapped `send` per response: ServerErrorMiddleware is patched once per session.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from starlette.middleware.errors import ServerErrorMiddleware

SEEN: list[str] = []  # "GET /path -> 503" since the current test began
_ACCESS_LINE_5XX = re.compile(r'"([A-Z]+ \S+) HTTP/[\d.]+" (5\d\d)\b')  # uvicorn's access log


def install() -> Callable[[], None]:
    """Record every 5xx an in-process app sends; returns the undo."""
    original = ServerErrorMiddleware.__call__

    async def recording(self, scope, receive, send):
        if scope["type"] != "http":
            return await original(self, scope, receive, send)

        async def recorded_send(message):
            if message["type"] == "http.response.start" and message["status"] >= 500:
                SEEN.append(f"{scope['method']} {scope['path']} -> {message['status']}")
            await send(message)

        return await original(self, scope, receive, recorded_send)

    ServerErrorMiddleware.__call__ = recording
    return lambda: setattr(ServerErrorMiddleware, "__call__", original)


def scan_api_logs(folder: Path) -> None:
    """Add the 5xx answers in the `api*.log` files of a harness stack's folder."""
    for log in sorted(folder.glob("api*.log")):
        for match in _ACCESS_LINE_5XX.finditer(log.read_text(errors="replace")):
            SEEN.append(f"{match[1]} -> {match[2]} ({log.name})")
