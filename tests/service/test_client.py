"""The SDK's own logic: the SSE parser, error messages, and the model checksum. The SDK against
the real service: tests/integration/test_live.py; here a transport plays a server answering what
the real one never does (a corrupted model)."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from service.client import ChecksumMismatch, Client, InvalidRequest, RawEvent, api_error, parse_sse


def test_parse_sse_follows_the_html_standard():
    lines = [": a comment", "retry: 2500", "", "event: epoch", "data: {\"a\":", "data: 1}", "id: 7", "",
             "data:no space", "", "event: ignored-without-data", "", "id: 8", "data: x", ""]
    assert list(parse_sse(lines)) == [
        RawEvent("epoch", '{"a":\n1}', "7", None),
        RawEvent("message", "no space", "7", None),  # the last id carries over, as in a browser
        RawEvent("message", "x", "8", None),
    ]


def test_a_422_lists_each_field_with_its_message():
    response = httpx.Response(422, json={"detail": [
        {"type": "greater_than_equal", "loc": ["body", "epochs"], "msg": "Input should be greater than or equal to 1"},
        {"type": "limit_exceeded", "loc": ["body", "model", "hidden_layers", 1, "units"], "msg": "too wide"}]})
    error = api_error(response)
    assert isinstance(error, InvalidRequest) and error.status == 422
    assert str(error) == "422: epochs: Input should be greater than or equal to 1; model.hidden_layers.1.units: too wide"


def test_a_model_whose_bytes_do_not_match_the_servers_sha256_is_not_kept(tmp_path):
    body = b"PK\x03\x04 not the model the server hashed"

    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"X-Model-SHA256": hashlib.sha256(b"other").hexdigest()})

    with Client("http://testserver", transport=httpx.MockTransport(server)) as bp, \
            pytest.raises(ChecksumMismatch, match="does not match"):
        bp.download_model("0123", tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one
