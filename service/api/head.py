"""HEAD wherever GET is served (RFC 9110: the GET's status and headers, no body).

FastAPI routes answer only the methods they declare, so HEAD on a GET route was a 405. This
middleware runs the GET and sends its start (status, headers, Content-Length) with an empty body;
once that is out, the app's `receive` reports a disconnect, so a stream (the event stream) stops.
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def head_receive() -> Message:
            return {"type": "http.disconnect"} if answered else await receive()

        async def head_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not answered:
                answered = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
