"""Event-stream benchmarks, run by bench/service.py against a running stack (`backprop api`).

The benchmark process plays the worker through the real Store and publisher (record_epoch, then
the wake-up hint, as worker/training.py does) on jobs it creates and claims itself (never
enqueued, so the stack's workers leave them alone), and reads the API's event streams:

- commit-to-client latency: from record_epoch's return (the commit) to the epoch's `id:` line
  reaching a connected client, one stream, one epoch every 50 ms;
- many streams: N streams held open on the one API process (spread over 20 jobs) while every
  job records 4 epochs a second; whether every stream got every epoch, the latency, and the API
  process's memory.
Both clocks are this process's time.perf_counter().
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np

EPOCH_GAP_SECONDS = 0.05
LATENCY_EPOCHS = 200
STREAM_JOBS = 20
EPOCHS_PER_SECOND_PER_JOB = 4
FLOW_SECONDS = 10


class BenchWorker:
    """Creates jobs and writes their epochs as a worker would."""

    def __init__(self, database_url: str, broker_url: str, workdir: Path):
        from service.config import Settings
        from service.events import JobEvents, redis_url
        from service.store import Store

        self.store = Store(Settings(_env_file=None, database_url=database_url, broker_url=broker_url,
                                    artifact_url=str(workdir / "artifacts")))
        self.events = JobEvents(redis_url(broker_url))

    def running_job(self, epochs: int) -> str:
        from service.specs import BUILTIN_DATASETS, JobSpec, resolve_spec

        spec = resolve_spec(JobSpec.model_validate({"dataset": {"builtin": "xor"}, "epochs": epochs}),
                            BUILTIN_DATASETS["xor"])
        job = self.store.create_job(owner=None, spec=spec, dataset_id="builtin:xor")
        assert self.store.claim_job(job.id, "bench-streams", 3600) is not None
        self.events.changed(job.id, "status")
        return job.id

    def epoch(self, job_id: str, epoch: int) -> float:
        """Record the epoch; returns the time its commit returned."""
        from service.specs import EpochMetrics

        metrics = EpochMetrics(epoch=epoch, train_loss=1 / epoch, val_loss=1.1 / epoch, lr=0.001, seconds=0.01)
        self.store.record_epoch(job_id, "bench-streams", metrics, is_best=False, lease_seconds=3600)
        committed = time.perf_counter()
        self.events.changed(job_id, f"epoch {epoch}")
        return committed

    def finish(self, job_id: str) -> None:
        self.store.finish_job(job_id, "bench-streams", status="succeeded", stop_reason="completed")
        self.events.changed(job_id, "status")

    def close(self) -> None:
        self.events.close()
        self.store.dispose()


async def read_stream(http: httpx.AsyncClient, job_id: str, arrivals: dict[int, float], opened: list) -> None:
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith(": events of job"):
                opened.append(job_id)
            elif line.startswith("id: "):
                arrivals.setdefault(int(line[4:]), time.perf_counter())
            elif line == "event: end":
                return


def run_streams(url: str, job_ids: list[str], write, timeout: float) -> list[dict[int, float]]:
    """Open one stream per entry of job_ids; once all are open, call write() in a thread; wait for `end`."""
    arrivals: list[dict[int, float]] = [{} for _ in job_ids]

    async def main() -> None:
        opened: list[str] = []
        limits = httpx.Limits(max_connections=len(job_ids) + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=None), limits=limits) as http:
            tasks = [asyncio.create_task(read_stream(http, job_id, arrivals[i], opened))
                     for i, job_id in enumerate(job_ids)]
            while len(opened) < len(job_ids):
                if any(task.done() for task in tasks):
                    for task in tasks:
                        if task.done():
                            task.result()  # raises what went wrong
                await asyncio.sleep(0.05)
            writer = threading.Thread(target=write)
            writer.start()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)
            writer.join()

    asyncio.run(main())
    return arrivals


def percentiles_ms(values: list[float]) -> tuple[float, float]:
    ms = np.asarray(values) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_commit_to_client(url: str, worker: BenchWorker, backend: str, target_ms: float) -> None:
    job_id = worker.running_job(LATENCY_EPOCHS)
    committed: dict[int, float] = {}

    def write() -> None:
        for epoch in range(1, LATENCY_EPOCHS + 1):
            committed[epoch] = worker.epoch(job_id, epoch)
            time.sleep(EPOCH_GAP_SECONDS)
        worker.finish(job_id)

    (arrivals,) = run_streams(url, [job_id], write, timeout=300)
    latencies = [arrivals[epoch] - committed[epoch] for epoch in committed]
    p50, p99 = percentiles_ms(latencies)
    print(f"{f'[{backend}] epoch commit -> client':<34} n={len(latencies):<5} p50={p50:8.2f} ms  p99={p99:8.2f} ms  "
          f"p50/target={p50 / target_ms:5.2f}  (target p50 < {target_ms:g} ms)")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_many_streams(url: str, worker: BenchWorker, backend: str, api_pid: int, counts=(50, 100, 200, 400)) -> None:
    for count in counts:
        epochs = FLOW_SECONDS * EPOCHS_PER_SECOND_PER_JOB
        jobs = [worker.running_job(epochs) for _ in range(STREAM_JOBS)]
        streams = [jobs[i % STREAM_JOBS] for i in range(count)]
        committed: dict[tuple[str, int], float] = {}
        rss_before = rss_mib(api_pid)
        peak = [rss_before]

        def write() -> None:
            gap = 1 / (EPOCHS_PER_SECOND_PER_JOB * STREAM_JOBS)
            for epoch in range(1, epochs + 1):
                for job_id in jobs:
                    committed[job_id, epoch] = worker.epoch(job_id, epoch)
                    time.sleep(gap)
                peak[0] = max(peak[0], rss_mib(api_pid))
            for job_id in jobs:
                worker.finish(job_id)

        arrivals = run_streams(url, streams, write, timeout=600)
        committed_times = sorted(committed.values())
        rate = len(committed_times) / max(committed_times[-1] - committed_times[0], 1e-9)
        complete = sum(sorted(got) == list(range(1, epochs + 1)) for got in arrivals)
        latencies = [got[e] - committed[job_id, e] for job_id, got in zip(streams, arrivals) for e in got]
        p50, p99 = percentiles_ms(latencies)
        print(f"{f'[{backend}] {count} streams, epochs flowing':<34} complete={complete}/{count}  "
              f"events={len(latencies)}  p50={p50:8.2f} ms  p99={p99:8.2f} ms  "
              f"{rate:.0f} epochs/s over {STREAM_JOBS} jobs  API RSS {rss_before:.0f} -> {peak[0]:.0f} MiB  "
              "(target 200 streams)")
