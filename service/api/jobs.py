"""/v1/jobs: submit, list, get, history, cancel, model download, checkpoints.

Submission order matters: validate, find the dataset, resolve the spec against it, commit the job
row, and only then publish the task (on the enqueuer's thread, in order), so a worker never
receives an id the database lacks.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from service.api.deps import EnqueuerDep, JobEventsDep, OwnerDep, SettingsDep, StoreDep
from service.api.downsample import downsample
from service.api.errors import error_responses
from service.api.portable import ModelCacheDep, built_download, digest_headers, not_modified
from service.specs import (
    BUILTIN_DATASETS, BUILTIN_PREFIX, MAX_FOLDS, CheckpointPublic, DatasetInfo, DatasetSpec, EpochMetrics,
    HistoryPublic, JobPage, JobPublic, JobSpec, JobStatus, SpecMismatch, TransferSource, check_transfer, resolve_spec,
)
from service.store import ArtifactError, ArtifactStore, NotFound, Store, StoredObject

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401))
log = logging.getLogger(__name__)

HISTORY_COLUMNS = tuple(EpochMetrics.model_fields)  # epoch, train_loss, ..., lr, seconds
NOT_FOUND = error_responses(404, _404="no such job (or another owner's)")


@router.post(
    "", status_code=202, response_model=JobPublic,
    responses={**error_responses(400, 404, 413, 429, _404="unknown dataset (or another owner's)"),
               422: {"description": "invalid spec, a spec over one of this deployment's caps "
                     "(type `limit_exceeded`, see GET /v1/limits), or one that cannot fit its dataset "
                     "(type `spec_mismatch`)"}},
)
def submit_job(spec: JobSpec, store: StoreDep, enqueuer: EnqueuerDep, owner: OwnerDep, settings: SettingsDep,
               response: Response) -> JobPublic:
    dataset_id, info = dataset_for(spec.dataset, store, owner)
    try:
        resolved = resolve_spec(spec, info, settings.job_limits)
        if resolved.init_from is not None:
            check_transfer(resolved, info, transfer_source(resolved.init_from.job_id, store, owner))
    except SpecMismatch as mismatch:  # same 422 shape as a schema error, located in the body
        raise RequestValidationError([{
            "type": mismatch.type, "loc": ("body", *mismatch.loc), "msg": mismatch.message,
            "input": value_at(spec.model_dump(mode="json"), mismatch.loc),
        }]) from None
    job = store.create_job(owner=owner, spec=resolved, dataset_id=dataset_id,  # committed here
                           max_queued=settings.max_queued_jobs_per_owner)
    # published by the enqueuer's own thread, in submission order, without holding up the answer:
    # the committed row is what counts, and a publish that never happens (a crash, a broker
    # down) is made good by the workers' reconciler
    enqueuer.send_later(job.id)
    response.headers["Location"] = router.url_path_for("get_job", job_id=job.id)
    return job


def value_at(body: object, loc: tuple[str | int, ...]) -> object:
    for key in loc:
        if isinstance(body, dict):
            body = body.get(key)
        elif isinstance(body, list) and isinstance(key, int) and key < len(body):
            body = body[key]
        else:
            return None
    return body


def transfer_source(job_id: str, store: Store, owner: str | None) -> TransferSource:
    """The layers `init_from` may copy: a succeeded job of this owner (SpecMismatch otherwise; another
    owner's job is answered exactly as a missing one)."""
    try:
        source = store.get_job(job_id, owner=owner)
    except NotFound:
        raise SpecMismatch(("init_from", "job_id"), f"no job {job_id} of yours") from None
    if source.status != "succeeded":
        raise SpecMismatch(("init_from", "job_id"), f"job {job_id} is {source.status}; layers are copied only "
                           "from a succeeded job's model")
    _, source_info = dataset_for(source.spec.dataset, store, owner)
    return TransferSource.of(source.spec, source_info)


def dataset_for(spec: DatasetSpec, store: Store, owner: str | None) -> tuple[str, DatasetInfo]:
    """The dataset id to store with the job and its shape; NotFound (404) when unknown."""
    name = spec.builtin
    if name is None and spec.id.startswith(BUILTIN_PREFIX):
        name = spec.id.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTIN_DATASETS:
            raise NotFound("dataset", spec.id)
    if name is not None:
        return BUILTIN_PREFIX + name, BUILTIN_DATASETS[name]
    return spec.id, store.dataset_info(spec.id, owner=owner)


@router.get("", response_model=JobPage, responses={422: {"description": "a bad filter, or a cursor this API did not issue"}})
def list_jobs(
    store: StoreDep,
    owner: OwnerDep,
    status: JobStatus | None = None,
    tag: Annotated[str | None, Query(description="jobs carrying this tag")] = None,
    name: Annotated[str | None, Query(description="jobs with exactly this name")] = None,
    dataset: Annotated[str | None, Query(description="dataset id, e.g. builtin:digits")] = None,
    sweep_id: Annotated[str | None, Query(description="the trials of this sweep")] = None,
    order_by: Literal["created_at", "best_val_loss", "best_val_accuracy"] = "created_at",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobPage:
    return store.list_jobs(owner=owner, status=status, tag=tag, name=name, dataset=dataset, sweep_id=sweep_id,
                           order_by=order_by, descending=order == "desc", limit=limit, cursor=cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND)
def get_job(job_id: str, store: StoreDep, owner: OwnerDep) -> JobPublic:
    return store.get_job(job_id, owner=owner)


@router.get(
    "/{job_id}/history", response_model=HistoryPublic,
    responses={**NOT_FOUND, 200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}},
)
def get_history(job_id: str, store: StoreDep, owner: OwnerDep, format: Literal["json", "csv"] = "json",
                points: Annotated[int | None, Query(ge=2, le=10_000, description="at most this many epochs, picked "
                                  "for a chart: the first, the last, and each bucket's lowest and highest loss")] = None,
                fold: Annotated[int | None, Query(ge=0, le=MAX_FOLDS, description="a cross-validated job: only "
                                "this fold's epochs (0..k-1; k is the refit on all rows)")] = None,
                ) -> Response:
    # serialized by hand from plain rows: a 10,000-epoch history is read on every poll of a dashboard
    fields, rows = store.history_rows(job_id, owner=owner, fold=fold)
    rows = in_history_order(fields, rows)
    if points is not None:
        rows = downsample(rows, points, HISTORY_COLUMNS)
    if format == "json":
        body = {"job_id": job_id, "epochs": [dict(zip(HISTORY_COLUMNS, row)) for row in rows]}
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
    return Response(history_csv(rows), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-history.csv"'})


def in_history_order(fields: tuple[str, ...], rows: list[tuple]) -> list[tuple]:
    if tuple(fields) == HISTORY_COLUMNS:
        return rows
    at = [fields.index(column) for column in HISTORY_COLUMNS]
    return [tuple(row[i] for i in at) for row in rows]


def history_csv(rows: list[tuple]) -> str:
    """Header epoch,train_loss,...,seconds; a metric that was not measured is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows(rows)  # csv writes None as ""
    return out.getvalue()


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobPublic, responses=NOT_FOUND,
    description="A queued job is cancelled at once; a running one stops at its next batch boundary, "
    "keeping its last checkpoint; a finished job is returned unchanged.",
)
def cancel_job(job_id: str, store: StoreDep, owner: OwnerDep, events: JobEventsDep,
               enqueuer: EnqueuerDep) -> JobPublic:
    job = store.request_cancel(job_id, owner=owner)
    events.changed(job_id, "cancel")  # wakes the job's event streams (service.events)
    if job.sweep_id is not None and job.status == "cancelled":  # a cancelled trial frees its sweep's place
        for released in store.release_held_trials(owner=owner):
            enqueuer.send_later(released)
    return job


@router.get(
    "/{job_id}/model",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "the model .npz, or with `?format=onnx` the network as ONNX; with "
                     "`?part=encoder` (autoencoders) the layers up to the narrowest, as their own model file",
                     "headers": {"X-Model-SHA256": {"description": "hex sha256 of the bytes served",
                                                    "schema": {"type": "string"}}}},
               307: {"description": "with S3 artifacts and DOWNLOAD_URL_SECONDS > 0: a presigned URL of the "
                                    "file (the same X-Model-SHA256 and ETag headers)"},
               304: {"description": "`If-None-Match` holds the model's ETag: the copy you have is current"},
               422: {"description": "`part=encoder` for a job that is not an autoencoder"},
               **NOT_FOUND, **error_responses(
                   409, _409="the job has no model (yet), or (ONNX) its network cannot be expressed in ONNX")},
)
def download_model(job_id: str, store: StoreDep, owner: OwnerDep, settings: SettingsDep, cache: ModelCacheDep,
                   request: Request, format: Literal["npz", "onnx"] = "npz",
                   part: Annotated[Literal["model", "encoder"], Query(
                       description="encoder: an autoencoder's layers up to its narrowest (codes as outputs)")] = "model",
                   ) -> Response:
    if format == "onnx" or part != "model":
        return built_download(job_id, store, owner, cache, request, part=part, format=format)
    model = store.model_file(job_id, owner=owner)
    filename = f"model-{job_id}.npz"
    headers = digest_headers(model.sha256)
    if not_modified(request, headers):
        return Response(status_code=304, headers=headers)
    return artifact_download(store.artifacts, model, filename, headers, settings.download_url_seconds)


def artifact_download(artifacts: ArtifactStore, stored: StoredObject, filename: str, headers: dict[str, str],
                      redirect_seconds: int) -> Response:
    """The object as a download: a redirect to a presigned URL when the store offers one and the
    deployment asks for it, the file itself from a local store, else streamed from the store."""
    url = artifacts.download_url(stored.key, filename=filename, expires_seconds=redirect_seconds)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers=headers)
    path = artifacts.local_path(stored.key)
    if path is not None:
        if not path.is_file():
            raise ArtifactError(f"artifact {stored.key!r} is missing")
        return FileResponse(path, media_type="application/octet-stream", filename=filename, headers=headers)
    if stored.size_bytes is not None:
        headers = {**headers, "Content-Length": str(stored.size_bytes)}
    return StreamingResponse(artifacts.stream(stored.key), media_type="application/octet-stream",
                             headers={**headers, "Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointPublic], responses=NOT_FOUND)
def list_checkpoints(job_id: str, store: StoreDep, owner: OwnerDep) -> list[CheckpointPublic]:
    return store.list_checkpoints(job_id, owner=owner)
