"""Epoch bookkeeping: what each epoch's checkpoint and transaction cost the training loop.

    python -m bench.bookkeeping [--epochs 200] [--backend sqlite|postgresql|both] [--part pipeline|late|both]

The 100k-parameter model of bench/service.py (64-768-64-10, Adam: a 1.2 MB checkpoint) trains on
digits with a checkpoint every epoch, through the worker's own bookkeeping (worker/bookkeeping.py)
against a real store. Reported, medians over the epochs:
- blocked: what the training thread pays per epoch (the state snapshot and the hand-over, which
  waits only if the previous epoch's bookkeeping is still running); target p50 < 3 ms;
- recorded: the bookkeeping thread's work per epoch (checkpoint serialized, hashed, written and
  fsynced; the epoch's transaction with pruning), which overlaps the next epoch;
- inline: the same work done on the training thread, as before (snapshot + write + transaction),
  measured in the same run as the reference.

`--part late` (issue 11): does an epoch's bookkeeping cost grow with the epoch? A tiny model (iris,
4-8-3) with a checkpoint every epoch; the inline bookkeeping (snapshot + checkpoint write + the
epoch transaction) of epochs 1..W, against epochs LATE-W+1..LATE of another job whose history rows
1..LATE-W were recorded first and whose trainer resumed at LATE-W with that history, as the worker
resumes. Medians and their ratio (late / early); target within 10%.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench.stack import postgres_database


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metrics_of(end):
    from service.specs import EpochMetrics

    return EpochMetrics(epoch=end.epoch, **{k: v for k, v in end.metrics.items() if k in EpochMetrics.model_fields})


def run(database_url: str, workdir: Path, epochs: int) -> dict[str, list[float]]:
    from sklearn.datasets import load_digits

    from service.config import Settings
    from service.specs import BUILTIN_DATASETS, JobSpec, parameter_count, resolve_spec
    from service.store import CheckpointPolicy, Store, upgrade
    from worker.app import limit_blas_threads
    from worker.bookkeeping import EpochBookkeeper
    from worker.training import train_config

    limit_blas_threads(1)
    settings = Settings(_env_file=None, database_url=database_url, artifact_url=str(workdir / "artifacts"))
    upgrade(settings)
    store = Store(settings)
    spec = resolve_spec(JobSpec.model_validate({
        "dataset": {"builtin": "digits"}, "epochs": epochs, "batch_size": 256,
        "model": {"hidden_layers": [{"units": 768}, {"units": 64}]},
        "checkpoint": {"every_epochs": 1, "keep_last": 2, "keep_best": True}}), BUILTIN_DATASETS["digits"])
    print(f"  model: {parameter_count(spec, BUILTIN_DATASETS['digits']):,} parameters")
    X, y = load_digits(return_X_y=True)
    policy = CheckpointPolicy.of(spec)
    timings: dict[str, list[float]] = {"blocked": [], "recorded": [], "inline": [], "epoch": []}

    from worker.nn import Trainer

    # pipelined, as the worker runs it
    job = store.create_job(owner=None, spec=spec, dataset_id="builtin:digits")
    store.claim_job(job.id, "bench", 600)
    trainer = Trainer(train_config(spec), X, y)
    with EpochBookkeeper(store, job.id, "bench", lease_seconds=600, policy=policy) as keeper:
        def pipelined(end):
            started = time.perf_counter()
            keeper.submit(metrics_of(end), is_best=end.is_best, checkpoint=end.trainer.checkpoint_snapshot())
            timings["blocked"].append(time.perf_counter() - started)
        trainer.fit(on_epoch_end=pipelined)
        keeper.wait()
    timings["recorded"] = keeper.recorded_seconds
    timings["epoch"] = [h["seconds"] for h in trainer.history]

    # inline, the same work on the training thread
    job = store.create_job(owner=None, spec=spec, dataset_id="builtin:digits")
    store.claim_job(job.id, "bench", 600)
    trainer = Trainer(train_config(spec), X, y)

    def inline(end):
        started = time.perf_counter()
        stored = store.artifacts.write(store.checkpoint_key(job.id, end.epoch), end.trainer.checkpoint_snapshot())
        store.record_epoch(job.id, "bench", metrics_of(end), is_best=end.is_best, checkpoint=stored,
                           lease_seconds=600, checkpoint_policy=policy)
        timings["inline"].append(time.perf_counter() - started)
    trainer.fit(on_epoch_end=inline)
    store.dispose()
    return timings


def late(database_url: str, workdir: Path, window: int, late_epoch: int) -> dict[str, list[float]]:
    from sklearn.datasets import load_iris

    from service.config import Settings
    from service.specs import BUILTIN_DATASETS, EpochMetrics, JobSpec, resolve_spec
    from service.store import CheckpointPolicy, Store, upgrade
    from worker.app import limit_blas_threads
    from worker.nn import Trainer
    from worker.training import train_config

    limit_blas_threads(1)
    settings = Settings(_env_file=None, database_url=database_url, artifact_url=str(workdir / "artifacts"))
    upgrade(settings)
    store = Store(settings)
    X, y = load_iris(return_X_y=True)

    def spec(epochs: int):
        return resolve_spec(JobSpec.model_validate({
            "dataset": {"builtin": "iris"}, "epochs": epochs, "batch_size": 32,
            "model": {"hidden_layers": [{"units": 8}]},
            "early_stopping": {"patience": 10 * late_epoch, "restore_best_weights": True},
            "checkpoint": {"every_epochs": 1, "keep_last": 2, "keep_best": True}}), BUILTIN_DATASETS["iris"])

    def one_epoch(job_id: str, trainer: Trainer, policy: CheckpointPolicy, times: list[float]) -> None:
        def inline(end):
            started = time.perf_counter()
            stored = store.artifacts.write(store.checkpoint_key(job_id, end.epoch), end.trainer.checkpoint_snapshot())
            store.record_epoch(job_id, "bench", metrics_of(end), is_best=end.is_best, checkpoint=stored,
                               lease_seconds=600, checkpoint_policy=policy)
            times.append(time.perf_counter() - started)
            return "paused"  # one epoch per call: the two jobs take turns, under the same load
        trainer.fit(on_epoch_end=inline)

    early_spec = spec(window)
    early_job = store.create_job(owner=None, spec=early_spec, dataset_id="builtin:iris")
    store.claim_job(early_job.id, "bench", 600)
    early_trainer = Trainer(train_config(early_spec), X, y)

    # epochs 1..resume_at recorded (real metrics, repeated), then a trainer at that epoch with that history
    late_spec, resume_at = spec(late_epoch), late_epoch - window
    job = store.create_job(owner=None, spec=late_spec, dataset_id="builtin:iris")
    store.claim_job(job.id, "bench", 600)
    seed_trainer = Trainer(train_config(late_spec), X, y)
    seen = seed_trainer.fit(on_epoch_end=lambda end: "paused" if end.epoch == window else None).history
    for epoch in range(1, resume_at + 1):
        store.record_epoch(job.id, "bench", EpochMetrics(**{**seen[epoch % window], "epoch": epoch}), is_best=False,
                           lease_seconds=600)
    fields, rows = store.history_rows(job.id)
    history = [dict(zip(fields, row)) for row in rows]
    arrays, meta = seed_trainer.state_dict()
    late_trainer = Trainer(train_config(late_spec), X, y)
    late_trainer.load_state_dict(arrays, {**meta, "epoch": resume_at}, history)

    early: list[float] = []
    late_times: list[float] = []
    for turn in range(window):
        pair = [(early_job.id, early_trainer, CheckpointPolicy.of(early_spec), early),
                (job.id, late_trainer, CheckpointPolicy.of(late_spec), late_times)]
        for args in pair if turn % 2 else pair[::-1]:
            one_epoch(*args)
    checkpoint_bytes = {row.epoch: row.size_bytes for row in store.list_checkpoints(job.id)}
    store.dispose()
    return {"early": early, "late": late_times, "checkpoint_bytes": [checkpoint_bytes[late_epoch]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--part", choices=["pipeline", "late", "both"], default="both")
    parser.add_argument("--window", type=int, default=100, help="--part late: epochs timed at each end")
    parser.add_argument("--late-epoch", type=int, default=5000, help="--part late: the last epoch of the late window")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as resources:
            workdir = Path(tmp)
            url = f"sqlite:///{workdir}/backprop.db" if backend == "sqlite" else \
                resources.enter_context(postgres_database())
            if args.part in ("late", "both"):
                print(f"[{backend}] epoch bookkeeping (inline) at epochs 1..{args.window} and "
                      f"{args.late_epoch - args.window + 1}..{args.late_epoch}, iris 4-8-3")
                times = late(url, workdir / "late", args.window, args.late_epoch)
                early_ms, late_ms = (1000 * statistics.median(times[name]) for name in ("early", "late"))
                ratio = late_ms / early_ms
                print(f"  early p50 {early_ms:6.2f} ms   late p50 {late_ms:6.2f} ms   late / early = {ratio:.3f} "
                      f"(within 10%: {'met' if abs(ratio - 1) <= 0.10 else 'MISSED'}); "
                      f"checkpoint at epoch {args.late_epoch}: {times['checkpoint_bytes'][0]:,} bytes")
            if args.part == "late":
                continue
            print(f"[{backend}] {args.epochs} epochs, a checkpoint every epoch")
            timings = run(url, workdir, args.epochs)
            for name in ("blocked", "recorded", "inline", "epoch"):
                values = [1000 * v for v in timings[name]]
                print(f"  {name:>9}: p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms")
            ratio = statistics.median(timings["blocked"]) / statistics.median(timings["inline"])
            target = "met" if statistics.median(timings["blocked"]) < 0.003 else "MISSED"
            print(f"  blocked / inline = {ratio:.3f}; blocked p50 < 3 ms: {target}")


if __name__ == "__main__":
    main()
