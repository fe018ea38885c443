"""Unbounded request headers (issue 11, defect 1): `backprop api` (a real process) answers 431 and
closes once the request line and headers pass MAX_HEADER_BYTES or their count MAX_HEADER_COUNT,
before reading more; its peak memory stays flat, /healthz answers during an attack, and a request
under the caps is served as before."""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bench.stack import BIN
from tests.integration.harness import running_stack
from tests.utils.rawhttp import peak_rss_bytes, send_raw
from tests.utils.uploads import npz_bytes

pytestmark = pytest.mark.integration

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 50
MiB = 1024 * 1024
FLAT_RSS_BYTES = 30 * MiB


def request(headers: list[bytes] = (), target: bytes = b"/v1/jobs") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: test\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


ATTACKS = [  # (label, request, what the 431 names)
    ("one 50 MiB header", request([b"X-Big: " + b"a" * (50 * MiB)]), "MAX_HEADER_BYTES"),
    ("a 50 MiB header name", request([b"X" * (50 * MiB) + b": 1"]), "MAX_HEADER_BYTES"),
    ("a 20 MiB request line", request(target=b"/v1/jobs?q=" + b"a" * (20 * MiB)), "MAX_HEADER_BYTES"),
    ("5,000 small headers", request([b"X-%d: 1" % i for i in range(5000)]), "MAX_HEADER_"),
    ("a few over the count", request([b"a: b"] * (MAX_HEADER_COUNT + 2)), "MAX_HEADER_COUNT"),
    ("many medium headers", request([b"X-M: " + b"m" * 1000] * 40), "MAX_HEADER_BYTES"),
    ("a 50 MiB Authorization", request([b"Authorization: Bearer " + b"k" * (50 * MiB)]), "MAX_HEADER_BYTES"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("headers")
    with running_stack(workdir, f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db",
                       workers=0, extra_env={"AUTH_REQUIRED": "true", "MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
                                             "MAX_HEADER_COUNT": str(MAX_HEADER_COUNT)}) as running:
        token = subprocess.run([str(BIN / "backprop"), "keys", "create", "--owner", "alice"],
                               env=running.env, cwd=workdir, capture_output=True, text=True, check=True).stdout.strip()
        running.token = token
        warm = httpx.get(f"{running.url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert warm.status_code == 200, warm.text
        send_raw(running.url, ATTACKS[0][1][:4 * MAX_HEADER_BYTES])  # the refusal's own code paths, warmed up
        yield running


def assert_refused(answer, names):
    assert answer.status in (431, None), answer  # 431, or closed before an answer could be read
    if answer.status == 431:
        assert names in json.loads(answer.body)["detail"]


@pytest.mark.parametrize("label, raw, names", ATTACKS, ids=[label for label, _, _ in ATTACKS])
def test_oversized_header_blocks_get_431_and_memory_stays_flat(stack, label, raw, names):
    api_pid = stack.processes["api"].pid
    before = peak_rss_bytes(api_pid)
    answers = [send_raw(stack.url, raw) for _ in range(3)]
    for answer in answers:
        assert_refused(answer, names)
    assert any(answer.status == 431 for answer in answers)
    if len(raw) > 10 * MiB:
        assert all(answer.sent < len(raw) for answer in answers)  # the server stopped reading early
    assert peak_rss_bytes(api_pid) - before < FLAT_RSS_BYTES
    assert httpx.get(f"{stack.url}/healthz", timeout=10).status_code == 200


def test_concurrent_attacks_leave_healthz_answering(stack):
    api_pid = stack.processes["api"].pid
    before = peak_rss_bytes(api_pid)
    big = ATTACKS[0][1]
    with ThreadPoolExecutor(6) as pool:
        attacks = [pool.submit(send_raw, stack.url, big) for _ in range(4)]
        attacks += [pool.submit(send_raw, stack.url, ATTACKS[3][1])]
        health = [httpx.get(f"{stack.url}/healthz", timeout=10) for _ in range(5)]
        for attack in attacks:
            assert_refused(attack.result(), "MAX_HEADER_")
    assert all(response.status_code == 200 for response in health)
    assert peak_rss_bytes(api_pid) - before < FLAT_RSS_BYTES


def test_requests_under_the_caps_are_served(stack):
    key = {"Authorization": f"Bearer {stack.token}"}
    under = {f"X-Pad-{i}": "p" * 100 for i in range(MAX_HEADER_COUNT - 10)}  # ~10 KiB in 40 headers
    response = httpx.get(f"{stack.url}/v1/jobs", headers={**key, **under}, timeout=30)
    assert response.status_code == 200, response.text
    no_key = send_raw(stack.url, request([b"X-Pad: " + b"p" * (MAX_HEADER_BYTES // 2)]))
    assert no_key.status == 401  # under the cap, the app answers as before
    keep_alive = httpx.Client(base_url=stack.url, headers=key, timeout=30)
    with keep_alive:  # many requests on one connection: the count is per request, not per connection
        for _ in range(3 * MAX_HEADER_COUNT):
            assert keep_alive.get("/healthz").status_code == 200


def test_large_bodies_on_one_connection_are_not_counted_as_headers(stack):
    """A body's last read may be 256 KiB; it belongs to its request, not to the next header block."""
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=60) as client:
        for size in (5_000, 60_000, 20_000):
            body = npz_bytes(X=rng.normal(size=(size, 8)), y=np.arange(size) % 2)
            response = client.post("/v1/datasets", files={"file": ("d.npz", body)})
            assert response.status_code == 201, response.text
