"""Factories for specs, jobs and epochs, shared by the store, API and worker tests."""
from __future__ import annotations

from typing import Any

from service.specs import BUILTIN_DATASETS, DEFAULT_LIMITS, EpochMetrics, JobSpec, SweepSpec, resolve_spec
from service.store import Store, StoredObject
from service.sweeps import draw_trials


def job_spec(builtin: str = "xor", **overrides: Any) -> JobSpec:
    """A resolved spec on a builtin dataset; overrides are JobSpec fields (dicts for sections)."""
    values: dict[str, Any] = {"dataset": {"builtin": builtin}, "epochs": 5}
    values.update(overrides)
    return resolve_spec(JobSpec.model_validate(values), BUILTIN_DATASETS[builtin])


def create_job(store: Store, owner: str | None = None, builtin: str = "xor", **overrides: Any):
    spec = job_spec(builtin, **overrides)
    return store.create_job(owner=owner, spec=spec, dataset_id=f"builtin:{builtin}")


def epoch_metrics(epoch: int, val_loss: float | None = None, **values: Any) -> EpochMetrics:
    """Plausible metrics for `epoch`: losses fall as epochs pass unless given."""
    loss = 1.0 / epoch
    return EpochMetrics(epoch=epoch, train_loss=values.pop("train_loss", loss),
                        val_loss=loss * 1.1 if val_loss is None else val_loss,
                        train_accuracy=values.pop("train_accuracy", 1 - loss / 2),
                        val_accuracy=values.pop("val_accuracy", 1 - loss / 1.8), lr=0.001, seconds=0.01, **values)


def store_checkpoint(store: Store, job_id: str, epoch: int, content: bytes | None = None) -> StoredObject:
    """An object in the artifact store where the worker would put the job's checkpoint for `epoch`."""
    data = content if content is not None else f"checkpoint {job_id} {epoch}".encode()
    return store.artifacts.write(store.checkpoint_key(job_id, epoch), lambda file: file.write(data))


def store_model(store: Store, job_id: str, content: bytes) -> StoredObject:
    return store.artifacts.write(store.model_key(job_id), lambda file: file.write(content))


def read_object(store: Store, key: str) -> bytes:
    with store.artifacts.open(key) as handle:
        return handle.read()


def sweep_spec(space: dict[str, Any] | None = None, builtin: str = "xor", base: dict[str, Any] | None = None,
               **fields: Any) -> SweepSpec:
    """A sweep over the learning rate on a builtin dataset; fields are SweepSpec fields."""
    values: dict[str, Any] = {
        "base": base or {"dataset": {"builtin": builtin}, "epochs": 5},
        "space": space or {"optimizer.learning_rate": {"loguniform": [1e-3, 1e-1]}},
        "max_trials": 4, "max_concurrent": 2,
    }
    values.update(fields)
    return SweepSpec.model_validate(values)


def create_sweep(store: Store, owner: str | None = None, builtin: str = "xor", **fields: Any):
    """(sweep, released job ids), as POST /v1/sweeps stores it."""
    spec = sweep_spec(builtin=builtin, **fields)
    trials = draw_trials(spec, BUILTIN_DATASETS[builtin], DEFAULT_LIMITS, store.settings.max_trials_per_sweep)
    return store.create_sweep(owner=owner, spec=spec, dataset_id=f"builtin:{builtin}", trials=trials)
