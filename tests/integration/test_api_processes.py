"""`backprop api --workers N` (issue 10, req. 3): N processes serve one port, each with its own
engine and broker client; a job submitted through one is visible through any."""
from __future__ import annotations

import os
import signal
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
