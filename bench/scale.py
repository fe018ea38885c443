"""Worker throughput against the number of worker processes (issue 10, req. 4).

    python -m bench.scale [--workers 1 2 4] [--tiny 120] [--cpu 24] [--rounds 3]

For each worker count N, a fresh stack on loopback: the API, N `backprop worker` processes (one
training process each, one BLAS thread), Redis, PostgreSQL and an S3 server (moto) for the
artifacts, each process in a private folder, the broker, database and object store all in this
run. Two workloads, each submitted at once and timed from the first submission to the last job's
end:
- tiny: 1-epoch xor jobs (the cost is the service: claim, bookkeeping, model upload, finish);
- cpu-bound: digits jobs with a 2 x 256 network for 16 epochs (the cost is the engine).
Reported: jobs per minute (median of `--rounds` drains), and the speedup over one worker
measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.stack import postgres_database, private_redis, running_stack, s3_server, wait_for_job

TINY = {"dataset": {"builtin": "xor"}, "epochs": 1, "batch_size": 4, "tags": ["scale"]}
CPU_BOUND = {"dataset": {"builtin": "digits"}, "epochs": 16, "batch_size": 16, "tags": ["scale"],
             "model": {"hidden_layers": [{"units": 256}, {"units": 256}]}}
TERMINAL = ("succeeded", "failed", "cancelled")


def drain(client: httpx.Client, spec: dict, count: int) -> float:
    """Submit `count` jobs at once; seconds until the last one ended."""
    started = time.perf_counter()
    ids = [client.post("/v1/jobs", json=spec).raise_for_status().json()["id"] for _ in range(count)]
    for job_id in ids:
        job = wait_for_job(client, job_id, TERMINAL, timeout=3600)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    return time.perf_counter() - started


def measure(workers: int, tiny: int, cpu: int, rounds: int, workdir: Path) -> dict[str, float]:
    with ExitStack() as resources:
        s3 = resources.enter_context(s3_server(workdir / "s3"))
        database_url = resources.enter_context(postgres_database())
        redis = resources.enter_context(private_redis(workdir / "redis"))
        env = {**s3.env(), "ARTIFACT_URL": s3.new_bucket(), "MAX_QUEUED_JOBS_PER_OWNER": "10000",
               "REQUEUE_AFTER_SECONDS": "3600", "BLAS_THREADS": "1"}
        stack = resources.enter_context(running_stack(workdir / "stack", database_url, redis.url, workers=workers,
                                                      extra_env=env, private_dirs=True))
        client = resources.enter_context(httpx.Client(base_url=stack.url, timeout=60))
        drain(client, TINY, 2 * workers)  # warm up: every worker has imported, connected and trained once
        return {"tiny": statistics.median(tiny / drain(client, TINY, tiny) * 60 for _ in range(rounds)),
                "cpu": statistics.median(cpu / drain(client, CPU_BOUND, cpu) * 60 for _ in range(rounds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tiny", type=int, default=120, help="tiny jobs per drain")
    parser.add_argument("--cpu", type=int, default=24, help="CPU-bound jobs per drain")
    parser.add_argument("--rounds", type=int, default=3, help="drains per workload and worker count (median)")
    args = parser.parse_args()
    results = {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            results[workers] = measure(workers, args.tiny, args.cpu, args.rounds, Path(tmp))
        print(f"{workers} worker(s): tiny {results[workers]['tiny']:7.1f} jobs/min   "
              f"cpu-bound {results[workers]['cpu']:6.1f} jobs/min", flush=True)
    base = results[args.workers[0]]
    print("\nworkers  tiny jobs/min  speedup   cpu-bound jobs/min  speedup")
    for workers, figures in results.items():
        print(f"{workers:>7}  {figures['tiny']:>13.1f}  {figures['tiny'] / base['tiny']:>6.2f}x   "
              f"{figures['cpu']:>18.1f}  {figures['cpu'] / base['cpu']:>6.2f}x")


if __name__ == "__main__":
    main()
