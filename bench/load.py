"""Load check: `python -m bench.load [--backend embedded|redis_postgres] [--clients 50] [--seconds 60]`.

Starts the real service (bench/stack.py: `backprop api` and `backprop worker` processes, auth on,
one API key per client) and runs N concurrent clients on loopback for a bounded time. Each client
submits a small job, polls it every POLL_INTERVAL until it ends, and submits the next. Then every
accepted job is waited for (bounded by --drain-seconds) and checked in the database.

Printed: requests by status, 5xx (must be 0), transport errors, jobs accepted and how they ended,
any accepted job without a row or not terminal, "database is locked" and ERROR lines in the
service logs, submit and poll latency p50/p99, and for reference
the p50 of GET /healthz sampled by one extra client during the same run (poll p50 / healthz p50).
Exits 1 if any check fails. Not a test: the figures go to docs/load.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from bench.stack import fresh_redis, postgres_database, running_stack

POLL_INTERVAL = 0.2
TERMINAL = ("succeeded", "failed", "cancelled")
SMALL_JOB = {"dataset": {"builtin": "xor"}, "epochs": 3, "batch_size": 4, "tags": ["load"],
             "model": {"hidden_layers": [{"units": 8, "activation": "tanh"}]},
             "checkpoint": {"every_epochs": 3, "keep_last": 1, "keep_best": False}}


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)  # (method label, status code)
    transport_errors: Counter = field(default_factory=Counter)
    submit_seconds: list[float] = field(default_factory=list)
    poll_seconds: list[float] = field(default_factory=list)
    health_seconds: list[float] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> token of its owner
    seen_terminal: set[str] = field(default_factory=set)

    def server_errors(self) -> int:
        return sum(count for (_, status), count in self.statuses.items() if status >= 500)


async def timed_request(client: httpx.AsyncClient, tally: Tally, label: str, method: str, url: str,
                        **kwargs) -> tuple[httpx.Response | None, float]:
    start = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as error:
        tally.transport_errors[f"{label}: {type(error).__name__}"] += 1
        return None, time.perf_counter() - start
    elapsed = time.perf_counter() - start
    tally.statuses[(label, response.status_code)] += 1
    return response, elapsed


async def client_loop(url: str, token: str, seed: int, deadline: float, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {**SMALL_JOB, "seed": seed * 100_000 + n, "name": f"load-{seed}-{n}"}
            response, elapsed = await timed_request(client, tally, "POST /v1/jobs", "POST", "/v1/jobs", json=body)
            tally.submit_seconds.append(elapsed)
            if response is None or response.status_code != 202:
                await asyncio.sleep(POLL_INTERVAL)  # 429 (queue cap) or an error: back off a little
                continue
            job_id = response.json()["id"]
            tally.accepted[job_id] = token
            while time.monotonic() < deadline:
                await asyncio.sleep(POLL_INTERVAL)
                response, elapsed = await timed_request(client, tally, "GET /v1/jobs/{id}", "GET", f"/v1/jobs/{job_id}")
                tally.poll_seconds.append(elapsed)
                if response is not None and response.status_code == 200 and response.json()["status"] in TERMINAL:
                    tally.seen_terminal.add(job_id)
                    break


async def health_loop(url: str, deadline: float, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            response, elapsed = await timed_request(client, tally, "GET /healthz", "GET", "/healthz")
            tally.health_seconds.append(elapsed)
            await asyncio.sleep(POLL_INTERVAL)


async def drive(url: str, tokens: list[str], seconds: float, tally: Tally) -> None:
    deadline = time.monotonic() + seconds
    await asyncio.gather(health_loop(url, deadline, tally),
                         *(client_loop(url, token, i, deadline, tally) for i, token in enumerate(tokens)))


def drain(url: str, tally: Tally, timeout: float) -> dict[str, str]:
    """Wait (bounded) until every accepted job is terminal, as its owner sees it; {id: status}."""
    final: dict[str, str] = {}
    pending = [job_id for job_id in tally.accepted]
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30) as client:
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                response = client.get(f"/v1/jobs/{job_id}",
                                      headers={"Authorization": f"Bearer {tally.accepted[job_id]}"})
                tally.statuses[("GET /v1/jobs/{id} (drain)", response.status_code)] += 1
                status = response.json().get("status") if response.status_code == 200 else None
                if status in TERMINAL:
                    final[job_id] = status
                else:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(0.5)
    return final


def stored_jobs(database_url: str, ids: list[str]) -> dict[str, str]:
    """{id: status} straight from the database, for every accepted id that has a row."""
    from service.config import Settings
    from service.store import NotFound, Store

    store = Store(Settings(_env_file=None, database_url=database_url))
    found = {}
    try:
        for job_id in ids:
            try:
                found[job_id] = store.get_job(job_id).status
            except NotFound:
                pass
    finally:
        store.dispose()
    return found


def create_keys(database_url: str, count: int) -> list[str]:
    from service.config import Settings
    from service.store import ApiKeys, Store

    store = Store(Settings(_env_file=None, database_url=database_url))
    try:
        keys = ApiKeys(store)
        return [keys.create(f"load-client-{i:02d}").token for i in range(count)]
    finally:
        store.dispose()


def warm_up(url: str, token: str) -> None:
    """One job end to end before the clock starts: first connections, the broker's tables, imports."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        job = client.post("/v1/jobs", json={**SMALL_JOB, "name": "warm-up"}).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)


def ms_stats(values: list[float]) -> str:
    if not values:
        return "n=0"
    ms = np.asarray(values) * 1000
    return (f"n={len(ms):<6} p50={np.percentile(ms, 50):7.2f} ms  p99={np.percentile(ms, 99):7.2f} ms  "
            f"max={ms.max():7.2f} ms")


def run(backend: str, clients: int, seconds: float, workers: int, drain_seconds: float) -> dict:
    with ExitStack() as resources:
        workdir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="bp-load-")))
        if backend == "redis_postgres":
            database_url = resources.enter_context(postgres_database())
            broker_url = fresh_redis()
        else:
            database_url = f"sqlite:///{workdir / 'backprop.db'}"
            broker_url = f"sqla+sqlite:///{workdir / 'broker.db'}"
        stack = resources.enter_context(running_stack(workdir / "stack", database_url, broker_url, workers=workers,
                                                      extra_env={"AUTH_REQUIRED": "true"}))
        tokens = create_keys(database_url, clients)
        warm_up(stack.url, tokens[0])
        tally = Tally()
        started = time.monotonic()
        asyncio.run(drive(stack.url, tokens, seconds, tally))
        load_seconds = time.monotonic() - started
        drain_started = time.monotonic()
        final = drain(stack.url, tally, drain_seconds)
        drain_took = time.monotonic() - drain_started
        rows = stored_jobs(database_url, list(tally.accepted))
        logs = {log.name: log.read_text(errors="replace") for log in sorted((workdir / "stack").glob("*.log"))}

    locked = sum(text.count("database is locked") for text in logs.values())
    error_lines = {name: sum(" ERROR " in line or "Traceback" in line for line in text.splitlines())
                   for name, text in logs.items()}

    missing_rows = sorted(set(tally.accepted) - set(rows))
    not_terminal = sorted(job_id for job_id in tally.accepted if rows.get(job_id) not in TERMINAL)
    outcome = Counter(rows.values())
    summary = {
        "backend": backend, "clients": clients, "seconds": round(load_seconds, 1), "workers": workers,
        "requests": sum(tally.statuses.values()),
        "statuses": {f"{label} {status}": count for (label, status), count in sorted(tally.statuses.items())},
        "server_errors_5xx": tally.server_errors(), "transport_errors": dict(tally.transport_errors),
        "jobs_accepted": len(tally.accepted), "jobs_by_status": dict(outcome),
        "accepted_without_row": len(missing_rows), "accepted_not_terminal": len(not_terminal),
        "drain_seconds": round(drain_took, 1),
        "database_is_locked": locked, "log_error_lines": error_lines,
        "submit_ms": ms_stats(tally.submit_seconds), "poll_ms": ms_stats(tally.poll_seconds),
        "healthz_ms": ms_stats(tally.health_seconds),
    }
    print(f"\n== load: {backend}, {clients} clients x {load_seconds:.0f} s, {workers} workers ==")
    for (label, status), count in sorted(tally.statuses.items()):
        print(f"  {label:<30} {status}  x {count}")
    for error, count in sorted(tally.transport_errors.items()):
        print(f"  transport error {error}  x {count}")
    print(f"  submit  {summary['submit_ms']}")
    print(f"  poll    {summary['poll_ms']}")
    print(f"  healthz {summary['healthz_ms']}  (reference, sampled during the run)")
    if tally.poll_seconds and tally.health_seconds:
        ratio = np.percentile(tally.poll_seconds, 50) / np.percentile(tally.health_seconds, 50)
        print(f"  poll p50 / healthz p50 = {ratio:.2f}")
        summary["poll_over_healthz_p50"] = round(float(ratio), 2)
    print(f"  jobs accepted {len(tally.accepted)}: {dict(outcome)}; drained in {drain_took:.1f} s")
    print(f"  service logs: 'database is locked' x {locked}; ERROR/Traceback lines {error_lines}")
    checks = {
        "no 5xx": tally.server_errors() == 0,
        "no transport errors": not tally.transport_errors,
        "every accepted job has its row": not missing_rows,
        "every accepted job reached a terminal state": not not_terminal,
        "no 'database is locked' in the service logs": locked == 0,
    }
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    summary["checks"] = checks
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "redis_postgres", "both"], default="embedded")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase length (bounded)")
    parser.add_argument("--workers", type=int, default=2, help="`backprop worker` processes")
    parser.add_argument("--drain-seconds", type=float, default=120.0,
                        help="at most this long to wait for accepted jobs to end")
    args = parser.parse_args(argv)
    backends = ["embedded", "redis_postgres"] if args.backend == "both" else [args.backend]
    results = [run(backend, args.clients, min(args.seconds, 600.0), args.workers, args.drain_seconds)
               for backend in backends]
    return 0 if all(all(result["checks"].values()) for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
