"""Drive an ASGI app with a streamed request body, and measure what the server side allocates.

TestClient builds the whole body in memory first, which would hide (and pollute) what the server
does with a large upload; here each chunk is made when the app asks for it and dropped after.
"""
from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CHUNK = 64 * 1024
BOUNDARY = "----backprop-test-boundary"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_read: int
    finished_reading: bool

    def json(self):
        return json.loads(self.body)


def call(app, path: str, chunks: Iterable[bytes], *, method: str = "POST", content_type: str,
         content_length: int | None = None, headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
    """Send the body chunk by chunk; a client that has no more to send then hangs (the app must not wait)."""
    raw_headers = [(b"content-type", content_type.encode())]
    if content_length is not None:
        raw_headers.append((b"content-length", str(content_length).encode()))
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": raw_headers, "server": ("testserver", 80), "client": ("testclient", 1)}
    source = iter(chunks)
    pending = next(source, None)
    read = 0
    finished = False
    sent: list[dict] = []

    async def receive():
        nonlocal pending, read, finished
        if pending is None:
            await asyncio.sleep(3600)
        body, pending = pending, next(source, None)
        read += 1
        finished = pending is None
        return {"type": "http.request", "body": body, "more_body": not finished}

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=timeout))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    return Answer(start["status"], response_headers, body, read, finished)


def multipart(filename: str, file_chunks: Iterable[bytes], fields: dict[str, str] | None = None) -> Iterator[bytes]:
    """A multipart/form-data body (boundary BOUNDARY) with `file` last, streamed."""
    head = b""
    for name, value in (fields or {}).items():
        head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
    head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    yield head
    yield from file_chunks
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(app, filename: str, data: bytes | Iterable[bytes], fields: dict[str, str] | None = None, **kwargs) -> Answer:
    chunks = (data[i:i + CHUNK] for i in range(0, len(data), CHUNK)) if isinstance(data, bytes) else data
    return call(app, "/v1/datasets", multipart(filename, chunks, fields),
                content_type=f"multipart/form-data; boundary={BOUNDARY}", **kwargs)


@dataclass
class Peak:
    bytes: int = 0
    baseline: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """The peak of Python and NumPy allocations (tracemalloc) above what was live on entry."""
    peak = Peak()
    tracemalloc.start()
    try:
        peak.baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1] - peak.baseline
    finally:
        tracemalloc.stop()
