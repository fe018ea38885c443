"""What ASHA saves: one random sweep on digits, run in full and with ASHA (issue 8).

    python -m bench.sweep [--trials 24] [--epochs 16] [--workers 2] [--concurrent 2]

A fresh stack on loopback: the API, `--workers` worker processes (one training process each, one
BLAS thread), Redis and PostgreSQL. The same sweep spec (so the same drawn trials: the draw is
seeded) runs twice, one after the other: without early termination, then with ASHA
(grace_period 1, reduction_factor 4: rungs at epochs 1 and 4 of 16). Reported for each: wall
time from submission to the sweep's end, epochs trained over all trials, the best trial's
validation accuracy; and ASHA's share of the full sweep's epochs (target ≤ 40%) and its best's
distance from the full sweep's best (target ≤ 0.5 points).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.stack import postgres_database, private_redis, running_stack

SPACE = {
    "optimizer.learning_rate": {"loguniform": [1e-4, 3e-2]},
    "model.hidden_layers.0.units": {"choice": [16, 32, 64, 128]},
    "batch_size": {"choice": [16, 32, 64]},
    "l2": {"loguniform": [1e-6, 1e-2]},
}
ASHA = {"grace_period": 1, "reduction_factor": 4}


def sweep_spec(trials: int, epochs: int, concurrent: int, asha: dict | None) -> dict:
    return {
        "name": "asha" if asha else "full",
        "base": {"dataset": {"builtin": "digits"}, "epochs": epochs, "seed": 0,
                 "checkpoint": {"every_epochs": epochs}},
        "space": SPACE, "method": "random", "seed": 2026, "max_trials": trials, "max_concurrent": concurrent,
        "metric": "val_accuracy", "mode": "max", "asha": asha,
    }


def run_sweep(client: httpx.Client, spec: dict, timeout: float = 3600) -> dict[str, float]:
    started = time.perf_counter()
    sweep = client.post("/v1/sweeps", json=spec).raise_for_status().json()
    deadline = started + timeout
    while sweep["status"] not in ("succeeded", "failed", "cancelled") or sweep["counts"]["running"]:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"sweep {sweep['id']} did not end in {timeout} s: {sweep['counts']}")
        time.sleep(0.5)
        sweep = client.get(f"/v1/sweeps/{sweep['id']}").raise_for_status().json()
    seconds = time.perf_counter() - started
    if sweep["status"] != "succeeded" or sweep["counts"]["succeeded"] != len(sweep["trials"]):
        raise RuntimeError(f"sweep {sweep['id']} ended {sweep['status']}: {sweep['counts']}")
    jobs = client.get("/v1/jobs", params={"sweep_id": sweep["id"], "limit": 500}).raise_for_status().json()["items"]
    return {"seconds": seconds, "epochs": sum(job["progress"]["epoch"] for job in jobs),
            "best": sweep["best"]["metric"], "pruned": sum(job["stop_reason"] == "pruned" for job in jobs)}


def measure(trials: int, epochs: int, workers: int, concurrent: int, workdir: Path) -> dict[str, dict[str, float]]:
    with ExitStack() as resources:
        database_url = resources.enter_context(postgres_database())
        redis = resources.enter_context(private_redis(workdir / "redis"))
        env = {"BLAS_THREADS": "1", "MAX_CONCURRENT_TRIALS_PER_OWNER": str(concurrent)}
        stack = resources.enter_context(running_stack(workdir / "stack", database_url, redis.url, workers=workers,
                                                      extra_env=env))
        client = resources.enter_context(httpx.Client(base_url=stack.url, timeout=60))
        run_sweep(client, sweep_spec(2, 1, concurrent, None))  # warm up: workers imported and connected
        return {name: run_sweep(client, sweep_spec(trials, epochs, concurrent, asha))
                for name, asha in (("full", None), ("asha", ASHA))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrent", type=int, default=2, help="max_concurrent of the sweeps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args.trials, args.epochs, args.workers, args.concurrent, Path(tmp))
    full, asha = results["full"], results["asha"]
    print(f"{args.trials} trials x {args.epochs} epochs on digits, {args.workers} workers, "
          f"{args.concurrent} trials at a time (Redis + PostgreSQL)")
    print("sweep   wall time   epochs   pruned   best val_accuracy")
    for name, figures in results.items():
        print(f"{name:<6} {figures['seconds']:>9.1f}s {figures['epochs']:>8.0f} {figures['pruned']:>8.0f} "
              f"{figures['best']:>19.4f}")
    share = asha["epochs"] / full["epochs"]
    gap = (full["best"] - asha["best"]) * 100
    print(f"ASHA trained {share:.1%} of the full sweep's epochs (target <= 40%) in "
          f"{asha['seconds'] / full['seconds']:.1%} of its time; its best is {gap:+.2f} points "
          f"below the full sweep's (target <= 0.5)")


if __name__ == "__main__":
    main()
