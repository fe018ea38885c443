"""Backprop Lab beside MLflow's tracking server, one process each, SQLite stores, the same client.

    python -m bench.service --compare-mlflow      (or python -m bench.mlflow_compare)

MLflow is installed in the bench's own virtualenv (.venv-mlflow, created on first use), never in
the project's. Both servers run on loopback with one process and a SQLite file; this process is
the client for both (httpx; the pollers a minimal keep-alive HTTP/1.1 client, so the
load generator is not what saturates). Measured, medians unless said otherwise:
- create: POST /v1/jobs (validated, resolved against its dataset, committed, sent to the broker)
  vs POST runs/create;
- record an epoch: Store.record_epoch, the worker's one transaction for an epoch's metrics and
  progress (in-process: our trainers never go through HTTP) vs log-batch of 4 metrics over HTTP
  (how an MLflow client records a step);
- read a 10,000-epoch history, every metric: GET /v1/jobs/{id}/history vs get-history of each of
  the 4 metrics;
- GET under 20 concurrent pollers: GET /v1/jobs/{id} vs GET runs/get (throughput and p99);
- the same pollers against `backprop api --workers 2` (target: >= 1.6 x one process).
Targets: every figure >= 3 x better than MLflow's. Ratios are MLflow's figure / ours for times,
ours / MLflow's for throughputs (> 1 means we are better).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench.stack import free_port, running_stack

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_VENV = ROOT / ".venv-mlflow"
CLIENTS = 20
POLLS = 3000
CREATES = 200
EPOCH_WRITES = 300
HISTORY_EPOCHS = 10_000
METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
JOB = {"dataset": {"builtin": "xor"}, "epochs": 5, "tags": ["compare"]}


def ensure_mlflow() -> Path:
    mlflow = MLFLOW_VENV / "bin" / "mlflow"
    if not mlflow.exists():
        print("installing MLflow into .venv-mlflow (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", "mlflow>=3"], check=True)
    return mlflow


@contextmanager
def mlflow_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    log = open(workdir / "mlflow.log", "ab")
    proc = subprocess.Popen(
        [str(ensure_mlflow()), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db", "--default-artifact-root", str(workdir / "mlruns")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=workdir,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLflow did not start:\n{(workdir / 'mlflow.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


class KeepAliveGetter:
    """A minimal HTTP/1.1 keep-alive client for one GET: the request is prebuilt and the answer
    read by Content-Length (or chunks), so the load generator costs tens of microseconds per
    request instead of httpx's hundreds and measures the server, not the client's GIL."""

    def __init__(self, url: str, path: str):
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json\r\n\r\n".encode()
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def get(self) -> None:
        self.sock.sendall(self.request)
        status = self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"GET answered {status!r}")
        length, chunked = None, False
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while (size := int(self.reader.readline().split(b";")[0], 16)):
                self.reader.read(size + 2)
            self.reader.readline()
        elif length is not None:
            self.reader.read(length)
        else:
            raise RuntimeError("an answer with neither Content-Length nor chunks")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def pollers(url: str, path: str, count: int = POLLS) -> tuple[float, float]:
    """(requests per second, p99 seconds) of `count` GETs from CLIENTS threads, each with its own
    keep-alive connection."""
    clients = [KeepAliveGetter(url, path) for _ in range(CLIENTS)]
    try:
        for client in clients:
            client.get()
        per_client = count // CLIENTS

        def poll(client: KeepAliveGetter) -> list[float]:
            return [timed(client.get) for _ in range(per_client)]

        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            latencies = [t for batch in pool.map(poll, clients) for t in batch]
        return len(latencies) / (time.perf_counter() - start), float(np.percentile(latencies, 99))
    finally:
        for client in clients:
            client.close()


# ---------------------------------------------------------------- MLflow


def measure_mlflow(workdir: Path) -> dict[str, float]:
    results = {}
    with mlflow_server(workdir) as url, httpx.Client(base_url=url, timeout=60) as client:
        api = "/api/2.0/mlflow"
        experiment = client.post(f"{api}/experiments/create", json={"name": "bench"}).raise_for_status().json()
        experiment_id = experiment["experiment_id"]

        def create() -> str:
            response = client.post(f"{api}/runs/create", json={"experiment_id": experiment_id,
                                                               "start_time": int(time.time() * 1000)})
            return response.raise_for_status().json()["run"]["info"]["run_id"]

        for _ in range(10):
            create()
        results["create"] = statistics.median(timed(create) for _ in range(CREATES))

        run_id = create()
        now = int(time.time() * 1000)

        def log_step(step: int) -> None:
            client.post(f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": [
                {"key": key, "value": 1.0 / step, "timestamp": now, "step": step} for key in METRICS]}).raise_for_status()

        results["epoch"] = statistics.median(timed(lambda s=step: log_step(s)) for step in range(1, EPOCH_WRITES + 1))

        history_run = create()
        for start in range(1, HISTORY_EPOCHS + 1, 250):  # log-batch takes at most 1000 metrics
            client.post(f"{api}/runs/log-batch", json={"run_id": history_run, "metrics": [
                {"key": key, "value": 1.0 / step, "timestamp": now, "step": step}
                for step in range(start, min(start + 250, HISTORY_EPOCHS + 1)) for key in METRICS]}).raise_for_status()

        def read_history() -> None:
            for key in METRICS:
                response = client.get(f"{api}/metrics/get-history",
                                      params={"run_id": history_run, "metric_key": key, "max_results": 25000})
                assert len(response.raise_for_status().json()["metrics"]) == HISTORY_EPOCHS

        read_history()
        results["history"] = statistics.median(timed(read_history) for _ in range(7))
        results["poll_rps"], results["poll_p99"] = pollers(url, f"{api}/runs/get?run_id={run_id}")
    return results


# ---------------------------------------------------------------- Backprop Lab


def measure_ours(workdir: Path, api_workers: int = 1, *, only_polls: bool = False) -> dict[str, float]:
    from service.config import Settings
    from service.specs import EpochMetrics
    from service.store import Store

    results = {}
    env = {"MAX_QUEUED_JOBS_PER_OWNER": "100000", "REQUEUE_AFTER_SECONDS": "3600"}
    with running_stack(workdir, f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db",
                       workers=0, extra_env=env, api_args=("--workers", str(api_workers))) as stack, \
            httpx.Client(base_url=stack.url, timeout=60) as client:
        def create() -> str:
            return client.post("/v1/jobs", json=JOB).raise_for_status().json()["id"]

        for _ in range(10):
            create()
        job_id = create()
        if not only_polls:
            results["create"] = statistics.median(timed(create) for _ in range(CREATES))
            store = Store(Settings(_env_file=None, database_url=stack.env["DATABASE_URL"],
                                   artifact_url=stack.env["ARTIFACT_URL"]))
            try:
                for target, epochs in ((job_id, EPOCH_WRITES), (history_job := create(), HISTORY_EPOCHS)):
                    assert store.claim_job(target, "bench", 3600) is not None
                    durations = []
                    for epoch in range(1, epochs + 1):
                        metrics = EpochMetrics(epoch=epoch, train_loss=1 / epoch, val_loss=1 / epoch,
                                               train_accuracy=0.5, val_accuracy=0.5, lr=0.001, seconds=0.01)
                        durations.append(timed(lambda m=metrics: store.record_epoch(
                            target, "bench", m, is_best=False, lease_seconds=3600)))
                    if target == job_id:
                        results["epoch"] = statistics.median(durations)
            finally:
                store.dispose()

            def read_history() -> None:
                response = client.get(f"/v1/jobs/{history_job}/history")
                assert len(response.raise_for_status().json()["epochs"]) == HISTORY_EPOCHS

            read_history()
            results["history"] = statistics.median(timed(read_history) for _ in range(7))
        results["poll_rps"], results["poll_p99"] = pollers(stack.url, f"/v1/jobs/{job_id}")
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("mlflow", "ours", "ours2"):
            (root / name).mkdir()
        theirs = measure_mlflow(root / "mlflow")
        ours = measure_ours(root / "ours")
        two = measure_ours(root / "ours2", api_workers=2, only_polls=True)
    rows = [
        ("create a job / a run, p50", "create", "ms"),
        ("record one epoch / log-batch of 4, p50", "epoch", "ms"),
        (f"read {HISTORY_EPOCHS:,} epochs x 4 metrics, p50", "history", "ms"),
        (f"GET under {CLIENTS} pollers, p99", "poll_p99", "ms"),
    ]
    print(f"\n{'measure':<42} {'Backprop Lab':>13} {'MLflow':>11} {'MLflow/ours':>12}  target >= 3")
    for label, key, _unit in rows:
        print(f"{label:<42} {1000 * ours[key]:>10.2f} ms {1000 * theirs[key]:>8.2f} ms {theirs[key] / ours[key]:>12.2f}")
    print(f"{f'GET under {CLIENTS} pollers, throughput':<42} {ours['poll_rps']:>8.0f} r/s {theirs['poll_rps']:>7.0f} r/s "
          f"{ours['poll_rps'] / theirs['poll_rps']:>12.2f}")
    print(f"\n--workers 2: {two['poll_rps']:.0f} r/s, p99 {1000 * two['poll_p99']:.1f} ms = "
          f"{two['poll_rps'] / ours['poll_rps']:.2f} x one process (target >= 1.6)")


if __name__ == "__main__":
    main()
