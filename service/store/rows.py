"""ORM rows to the public models of service.specs, and the job summary columns they feed."""
from __future__ import annotations

import math
from typing import Any

from service.specs import CrossValidationSummary, EpochMetrics, JobPublic, JobSpec, ModelCard, Progress
from service.store.models import EpochMetricsRow, JobRow

METRIC_FIELDS = tuple(EpochMetrics.model_fields)  # epoch, train_loss, ..., seconds, fold, fold_epoch
COUNTERS = ("epoch", "fold", "fold_epoch")  # integers, stored as they are


def job_public(row: JobRow) -> JobPublic:
    spec = JobSpec.model_validate(row.spec)
    return JobPublic(
        id=row.id, name=row.name, tags=list(dict.fromkeys(spec.tags)), status=row.status,
        stop_reason=row.stop_reason, error=row.error,
        progress=Progress(epoch=row.progress_epoch, epochs=row.epochs),
        latest_metrics=EpochMetrics(**row.latest_metrics) if row.latest_metrics else None,
        best_epoch=row.best_epoch,
        best_metrics=EpochMetrics(**row.best_metrics) if row.best_metrics else None,
        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        attempt=row.attempt, dataset_id=row.dataset_id, cancel_requested=row.cancel_requested, spec=spec,
        model_card=ModelCard.model_validate(row.model_card) if row.model_card else None,
        cross_validation=CrossValidationSummary.model_validate(row.cross_validation) if row.cross_validation else None,
        sweep_id=row.sweep_id, trial_params=row.trial_params,
    )


def finite_or_none(value: float | None) -> float | None:
    # NaN/inf (a diverged epoch) are stored as NULL: SQLite turns NaN into NULL and JSON has neither
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metrics_json(metrics: EpochMetrics) -> dict[str, Any]:
    return {name: (getattr(metrics, name) if name in COUNTERS else finite_or_none(getattr(metrics, name)))
            for name in METRIC_FIELDS}


def metrics_json_from_row(row: EpochMetricsRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in METRIC_FIELDS}


def set_best(row: JobRow, epoch: int | None, metrics: dict[str, Any] | None) -> None:
    row.best_epoch = epoch
    row.best_metrics = metrics
    row.best_val_loss = metrics.get("val_loss") if metrics else None
    row.best_val_accuracy = metrics.get("val_accuracy") if metrics else None


def summary_before_fold(summary: dict[str, Any] | None, fold: int) -> dict[str, Any] | None:
    """A cross-validation summary as it was before fold `fold` finished (a resume rewinds to a
    checkpoint inside that fold): only the earlier folds, and no mean/std until all are done."""
    if summary is None:
        return None
    kept = [entry for entry in summary["folds"] if entry["fold"] < fold]
    if len(kept) == len(summary["folds"]):
        return summary
    return {**summary, "folds": kept, "mean": None, "std": None, "refit_epochs": None}
