"""The HTTP server layer of `backprop api`: uvicorn's httptools protocol with the header block capped.

httptools (llhttp) accepts a request line and headers of any size and count: a header value is
accumulated whole before the app is called, so one request with a 50 MiB header costs the API
50 MiB (and more, as the buffer is grown by concatenation) before any 401, and 5,000 headers are
5,000 Python tuples. Here the bytes received while a request's headers are incomplete are
counted per read, and the headers as they are parsed; past MAX_HEADER_BYTES or MAX_HEADER_COUNT
(Settings) the connection gets a 431 and is closed, so at most one read beyond the cap is ever
held. The app never sees such a request.
"""
from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import get_settings


class HeaderLimitExceeded(Exception):
    """Raised inside the parser's callback to stop parsing the request."""


class HeaderLimitedHttpTools(HttpToolsProtocol):
    """uvicorn's `http` protocol for `backprop api` (limits from Settings in each API process)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self._reading_headers = True  # from connecting, and again after each request's body
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_headers and self._refusal is None and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(f"the request line and headers exceed {self.max_header_bytes} bytes (MAX_HEADER_BYTES)")

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refusal = f"the request has more than {self.max_header_count} headers (MAX_HEADER_COUNT)"
            raise HeaderLimitExceeded(self._refusal)  # uvicorn catches the parser error: send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_headers = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        self.logger.warning("431 for %s: %s", self.client, reason)
        body = json.dumps({"detail": reason}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()
