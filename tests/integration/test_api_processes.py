"""`backprop api --workers N` (issue 10, req. 3): N processes serve one port, each with its own
engine and broker client; a job submitted through one is visible through any."""
from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import running_stack, wait_for_job

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def serving_processes(api_pid: int, timeout: float = 30) -> list[int]:
    """uvicorn's supervisor is the API process; its children that import the app are the workers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [pid for pid in children(api_pid)  # not multiprocessing's resource tracker
                 if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        if len(found) >= 2:
            return found
        time.sleep(0.2)
    raise AssertionError(f"fewer than 2 API worker processes under {api_pid}: {children(api_pid)}")


def test_two_api_processes_share_the_port_and_the_database(tmp_path):
    with ExitStack() as resources:
        stack = resources.enter_context(running_stack(
            tmp_path, f"sqlite:///{tmp_path}/backprop.db", f"sqla+sqlite:///{tmp_path}/broker.db",
            api_args=("--workers", "2")))
        workers = serving_processes(stack.processes["api"].pid)
        assert len(workers) == 2

        with ThreadPoolExecutor(8) as pool:  # concurrent submissions land in both processes
            submitted = list(pool.map(
                lambda i: httpx.post(f"{stack.url}/v1/jobs", json={"dataset": {"builtin": "xor"}, "epochs": 2,
                                                                   "name": f"j{i}"}, timeout=30),
                range(16)))
        assert all(response.status_code == 202 for response in submitted)
        client = resources.enter_context(stack.client())
        for response in submitted:
            assert wait_for_job(client, response.json()["id"], ("succeeded",), timeout=120, stack=stack)
        assert len(client.get("/v1/jobs", params={"limit": 100}).json()["items"]) == 16

        os.kill(workers[0], signal.SIGKILL)  # one process dies: the other keeps serving
        for _ in range(20):  # a new connection each time: a kept-alive one may be to the dead process
            assert httpx.get(f"{stack.url}/healthz", timeout=10).status_code == 200


def established_on_port(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process `pid` holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def test_kept_alive_connections_spread_over_the_processes(tmp_path):
    """Each process listens on its own SO_REUSEPORT socket: with one shared socket, connections
    opened together (a client's pool, a load balancer's) are nearly all taken by whichever process
    is in accept() first, and stay there while kept alive."""
    with running_stack(tmp_path, f"sqlite:///{tmp_path}/backprop.db", f"sqla+sqlite:///{tmp_path}/broker.db",
                       workers=0, api_args=("--workers", "2")) as stack:
        workers = serving_processes(stack.processes["api"].pid)
        port = int(stack.url.rsplit(":", 1)[1])
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        try:
            deadline = time.monotonic() + 10
            while sum(held := [established_on_port(pid, port) for pid in workers]) < 40:
                assert time.monotonic() < deadline, f"accepted so far: {held}"
                time.sleep(0.05)
            assert min(held) >= 5, f"connections per process: {held}"  # P(< 5 of 40 by a fair hash) ~ 1e-7
            for connection in connections:  # and each is served
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert connection.recv(64).startswith(b"HTTP/1.1 200")
        finally:
            for connection in connections:
                connection.close()
