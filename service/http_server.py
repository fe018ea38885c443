"""The HTTP server layer of `backprop api`: uvicorn's httptools protocol with the header block capped.

httptools (llhttp) accepts a request line and headers of any size and count: a header value is
accumulated whole before the app is called, so one request with a 50 MiB header costs the API
50 MiB (and more, as the buffer is grown by concatenation) before any 401, and 5,000 headers are
5,000 Python tuples. Here two counts stop that: the reads that arrive while a request's headers
are incomplete (so a header that never ends is cut off one read past the cap), and the request
line and headers as they are parsed (a block that arrives whole in one read). Past
MAX_HEADER_BYTES or MAX_HEADER_COUNT (Settings) the connection gets a 431 and is closed, so at
most one read (256 KiB) beyond the cap is ever held. The app never sees such a request.
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
        self._boundary_in_read = False  # the read being parsed ended a header block or a body
        self._header_bytes = 0
        self._header_count = 0
        self._parsed_bytes = 0  # the request line and headers parsed so far
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        self._boundary_in_read = False
        super().data_received(data)
        # a read that ended a header block or a body holds the request's bytes (a body's last chunk
        # may be 256 KiB): only reads that are header bytes and nothing else are counted
        if self._boundary_in_read or self._refusal is not None or self.transport.is_closing():
            return
        if self._reading_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(self._too_many_bytes())

    def on_message_begin(self) -> None:
        self._header_count = 0
        self._parsed_bytes = len(b"GET  HTTP/1.1\r\n\r\n")
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._parsed_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.max_header_count:
            self._stop(f"the request has more than {self.max_header_count} headers (MAX_HEADER_COUNT)")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._boundary_in_read = True
        self._header_bytes = 0
        if self._parsed_bytes > self.max_header_bytes:  # a header block that came whole in one read
            self._stop(self._too_many_bytes())
        super().on_headers_complete()

    def _stop(self, reason: str) -> None:
        self._refusal = reason
        raise HeaderLimitExceeded(reason)  # uvicorn catches the parser's error and calls send_400_response

    def _too_many_bytes(self) -> str:
        return f"the request line and headers exceed {self.max_header_bytes} bytes (MAX_HEADER_BYTES)"

    def on_message_complete(self) -> None:
        self._reading_headers = True
        self._boundary_in_read = True
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
