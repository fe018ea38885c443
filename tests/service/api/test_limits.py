"""Request bodies are capped while they stream in: the app stops reading at the cap and answers 413."""
from __future__ import annotations

import asyncio
import json

import pytest

from service.api.limits import MAX_JSON_BODY_BYTES, MULTIPART_OVERHEAD_BYTES

CHUNK = 64 * 1024


MULTIPART_HEAD = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
                  b"Content-Type: application/octet-stream\r\n\r\n")


def call(app, path: str, *, chunks: int, content_type: str, content_length: int | None = None, head: bytes = b""):
    """Drive the ASGI app with a body of `head` and `chunks` x 64 KiB; return (status, detail, chunks read)."""
    headers = [(b"content-type", content_type.encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": headers, "server": ("testserver", 80), "client": ("testclient", 1)}
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if read == chunks:
            await asyncio.sleep(3600)  # a client that never finishes; the app must not wait for it
        read += 1
        body = head + b"\0" * (CHUNK - len(head)) if read == 1 else b"\0" * CHUNK
        return {"type": "http.request", "body": body, "more_body": read < chunks}

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=30))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)["detail"], read


@pytest.fixture
def small_upload_app(make_api):
    return make_api(max_upload_bytes=256 * 1024).client.app


def test_upload_stream_stops_at_the_cap(small_upload_app):
    status, detail, read = call(small_upload_app, "/v1/datasets", chunks=1000, head=MULTIPART_HEAD,
                                content_type="multipart/form-data; boundary=xyz")
    assert status == 413, detail
    cap = 256 * 1024 + MULTIPART_OVERHEAD_BYTES
    assert read == cap // CHUNK + 1  # the first chunk past the cap; 64 MB were on offer
    assert f"limit of {cap} bytes" in detail


def test_declared_length_over_the_cap_is_refused_before_reading(small_upload_app):
    status, detail, read = call(small_upload_app, "/v1/datasets", chunks=1000, content_length=10**12,
                                content_type="multipart/form-data; boundary=xyz")
    assert (status, read) == (413, 0)
    assert "1000000000000" in detail


def test_json_bodies_have_their_own_small_cap(small_upload_app):
    status, _, read = call(small_upload_app, "/v1/jobs", chunks=1000, content_type="application/json")
    assert status == 413
    assert read == MAX_JSON_BODY_BYTES // CHUNK + 1
