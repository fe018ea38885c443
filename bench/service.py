"""Service benchmark: `python -m bench.service [--backend redis_postgres|embedded|both] [--part http|streams|all]`.

Starts the API and 2 workers (real processes) and measures, with a bounded number of requests:
  - POST /v1/jobs latency at 20 concurrent clients (target p99 < 50 ms)
  - GET /v1/jobs/{id} latency at 20 concurrent clients (target p99 < 20 ms)
  - submit-to-running latency, from the job's own timestamps (target p50 < 100 ms Redis, < 1.5 s embedded)
  - per-epoch bookkeeping for a 100k-parameter model with a checkpoint every epoch: what the training
    thread pays (< 3 ms), and the same work inline (checkpoint write + the epoch transaction)
  - reading a 10,000-epoch history over HTTP (target < 100 ms)
  - event streams (bench/streams.py): epoch commit to a connected client (target p50 < 50 ms on
    Redis, < 300 ms embedded) and 50-400 streams on the one API process with epochs flowing (target 200)
Each line prints the median/p99 and its ratio to the target (ratio < 1 meets it).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from bench.stack import fresh_redis, postgres_database, running_stack, wait_for_job
from bench.streams import BenchWorker, bench_commit_to_client, bench_many_streams

CLIENTS = 20
POSTS = 400
GETS = 2000
STARTS = 15
HISTORY_EPOCHS = 10_000
TINY_JOB = {"dataset": {"builtin": "xor"}, "epochs": 1, "batch_size": 4, "tags": ["bench"],
            "checkpoint": {"every_epochs": 1, "keep_last": 1, "keep_best": False}}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def report(label: str, values_s: list[float], target_ms: float, stat: str = "p99") -> None:
    ms = [v * 1000 for v in values_s]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    measured = p99 if stat == "p99" else p50
    print(f"{label:<34} n={len(ms):<5} p50={p50:8.2f} ms  p99={p99:8.2f} ms  "
          f"{stat}/target={measured / target_ms:5.2f}  (target {stat} < {target_ms:g} ms)")


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def concurrent_latencies(url: str, make_call, count: int) -> list[float]:
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(CLIENTS)]
    try:
        def run(i: int) -> float:
            return timed(lambda: make_call(clients[i % CLIENTS]))
        with ThreadPoolExecutor(CLIENTS) as pool:
            return list(pool.map(run, range(count)))
    finally:
        for client in clients:
            client.close()


def bench_http(stack, backend: str, start_target_ms: float) -> None:
    url = stack.url
    client = httpx.Client(base_url=url, timeout=30)
    posted: list[str] = []

    def post(http: httpx.Client) -> None:
        response = http.post("/v1/jobs", json=TINY_JOB)
        response.raise_for_status()
        posted.append(response.json()["id"])

    def get(http: httpx.Client) -> None:
        http.get(f"/v1/jobs/{posted[0]}").raise_for_status()

    for _ in range(20):  # warm up connections and caches
        post(client)
    # one client alone: the service time of a request
    report(f"[{backend}] POST /v1/jobs, 1 client", [timed(lambda: post(client)) for _ in range(100)], 50)
    report(f"[{backend}] GET /v1/jobs/{{id}}, 1 client", [timed(lambda: get(client)) for _ in range(300)], 20)
    # 20 clients sending back to back: latency at saturation
    start = time.perf_counter()
    latencies = concurrent_latencies(url, post, POSTS)
    report(f"[{backend}] POST /v1/jobs, {CLIENTS} clients", latencies, 50)
    print(f"{'':<34} throughput {POSTS / (time.perf_counter() - start):.0f} req/s")
    start = time.perf_counter()
    latencies = concurrent_latencies(url, get, GETS)
    report(f"[{backend}] GET /v1/jobs/{{id}}, {CLIENTS} clients", latencies, 20)
    print(f"{'':<34} throughput {GETS / (time.perf_counter() - start):.0f} req/s")

    for job in posted:  # drain the queue before measuring start latency
        wait_for_job(client, job, ("succeeded", "failed", "cancelled"), timeout=600)
    starts = []
    for _ in range(STARTS):
        job = client.post("/v1/jobs", json=TINY_JOB).json()
        job = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), timeout=300)
        started = datetime.fromisoformat(job["started_at"])
        created = datetime.fromisoformat(job["created_at"])
        starts.append((started - created).total_seconds())
    report(f"[{backend}] submit-to-running", starts, start_target_ms, stat="p50")
    client.close()


def bench_bookkeeping_and_history(database_url: str, workdir: Path) -> str:
    """Epoch bookkeeping of the 100k-parameter model, as the worker runs it (bench/bookkeeping.py:
    what the training thread pays, and the same work inline as the reference), then a job with a
    10,000-epoch history to read."""
    from bench.bookkeeping import run as bookkeeping
    from service.config import Settings
    from service.specs import BUILTIN_DATASETS, EpochMetrics, JobSpec, resolve_spec
    from service.store import Store, upgrade

    timings = bookkeeping(database_url, workdir / "bookkeeping", epochs=200)
    report("epoch bookkeeping, training thread blocked", timings["blocked"], 3, stat="p50")
    report("epoch bookkeeping, inline (reference)", timings["inline"], 3, stat="p50")
    settings = Settings(_env_file=None, database_url=database_url, artifact_url=str(workdir / "artifacts"))
    upgrade(settings)
    store = Store(settings)
    spec = resolve_spec(JobSpec.model_validate({"dataset": {"builtin": "digits"}, "epochs": HISTORY_EPOCHS}),
                        BUILTIN_DATASETS["digits"])
    job = store.create_job(owner=None, spec=spec, dataset_id="builtin:digits")
    if store.claim_job(job.id, "bench", 60) is None:
        raise RuntimeError("the benchmark job could not be claimed")
    for epoch in range(1, HISTORY_EPOCHS + 1):
        store.record_epoch(job.id, "bench", EpochMetrics(
            epoch=epoch, train_loss=1.0 / epoch, val_loss=1.0 / epoch, train_accuracy=0.5, val_accuracy=0.5,
            lr=0.001, seconds=0.01), is_best=False, lease_seconds=60)
    store.dispose()
    return job.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["redis_postgres", "embedded", "both"], default="both")
    parser.add_argument("--compare-mlflow", action="store_true",
                        help="instead: Backprop Lab beside MLflow's tracking server (bench/mlflow_compare.py)")
    parser.add_argument("--part", choices=["http", "streams", "all"], default="all")
    args = parser.parse_args()
    if args.compare_mlflow:
        from bench import mlflow_compare

        mlflow_compare.main()
        return
    backends = ["redis_postgres", "embedded"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as resources:
            workdir = Path(tmp)
            if backend == "embedded":
                database_url = f"sqlite:///{workdir}/backprop.db"
                broker_url = f"sqla+sqlite:///{workdir}/broker.db"
            else:
                database_url = resources.enter_context(postgres_database())
                broker_url = fresh_redis()
            # hundreds of jobs wait at once: lift the per-owner queue cap, and keep the reconciler
            # from re-sending the backlog (duplicates would only slow the embedded broker's drain)
            extra_env = {"MAX_QUEUED_JOBS_PER_OWNER": str(10 * POSTS), "REQUEUE_AFTER_SECONDS": "3600",
                         "MAX_STREAMS_PER_OWNER": "1000"}
            stack = resources.enter_context(running_stack(workdir, database_url, broker_url, workers=2,
                                                          extra_env=extra_env))
            if args.part in ("http", "all"):
                bench_http(stack, backend, 100 if backend == "redis_postgres" else 1500)
                job_id = bench_bookkeeping_and_history(database_url, workdir)
                with httpx.Client(base_url=stack.url, timeout=30) as client:
                    client.get(f"/v1/jobs/{job_id}/history").raise_for_status()
                    reads = [timed(lambda: client.get(f"/v1/jobs/{job_id}/history").raise_for_status())
                             for _ in range(15)]
                report(f"[{backend}] GET history ({HISTORY_EPOCHS} epochs)", reads, 100, stat="p50")
            if args.part in ("streams", "all"):
                worker = BenchWorker(database_url, broker_url, workdir)
                try:
                    bench_commit_to_client(stack.url, worker, backend, 50 if backend == "redis_postgres" else 300)
                    bench_many_streams(stack.url, worker, backend, stack.processes["api"].pid)
                finally:
                    worker.close()


if __name__ == "__main__":
    main()
