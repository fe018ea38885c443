"""POST /v1/jobs/{id}/predict, and the ONNX form of GET /v1/jobs/{id}/model (service/api/jobs.py
routes it here): a trained model, callable and portable. Models are loaded (and exported) once per
process, keyed by their file's sha256, and a (job, owner)'s model is looked up once
(service/portable/cache.py)."""
from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from service.api.deps import OwnerDep, SettingsDep, StoreDep
from service.api.errors import error_responses
from service.portable.cache import ModelCache
from service.portable.onnx_export import NotExportable
from service.portable.predict import InvalidInputs, UnreadableBody, as_matrix, parse_rows, prediction
from service.specs import PredictRequest, PredictResponse
from service.store import Conflict, Store

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401))

NOT_FOUND = error_responses(404, _404="no such job (or another owner's)")


async def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


async def read_body(request: Request) -> bytes:
    return await request.body()


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
RawBody = Annotated[bytes, Depends(read_body)]


def digest_headers(sha256: str) -> dict[str, str]:
    """X-Model-SHA256, ETag and Digest of the bytes a model download serves."""
    digest = base64.b64encode(bytes.fromhex(sha256)).decode()
    return {"X-Model-SHA256": sha256, "ETag": f'"{sha256}"', "Digest": f"sha-256={digest}",
            "Repr-Digest": f"sha-256=:{digest}:"}


def not_modified(request: Request, headers: dict[str, str]) -> bool:
    return headers["ETag"] in request.headers.get("if-none-match", "")


def built_download(job_id: str, store: Store, owner: str | None, cache: ModelCache, request: Request, *,
                   part: str, format: str) -> Response:
    """GET /v1/jobs/{id}/model?format=onnx and ?part=encoder: built in this process from the model
    file, once. The encoder needs an autoencoder job (422 naming `part` otherwise)."""
    if part == "encoder":
        task = store.get_job(job_id, owner=owner).spec.task
        if task != "autoencoder":
            raise RequestValidationError([{
                "type": "not_an_autoencoder", "loc": ("query", "part"), "input": part,
                "msg": f"only an autoencoder job has an encoder part; job {job_id} is a {task} job"}])
    stored = cache.find(store, job_id, owner)
    try:
        built = cache.built(store, stored, part=part, format=format)
    except NotExportable as reason:
        raise Conflict(f"job {job_id}: the model cannot be exported to ONNX: {reason}") from None
    headers = digest_headers(built.sha256)
    if not_modified(request, headers):
        return Response(status_code=304, headers=headers)
    name = "model" if part == "model" else part
    headers["Content-Disposition"] = f'attachment; filename="{name}-{job_id}.{format}"'
    return Response(built.content, media_type="application/octet-stream", headers=headers)


@router.post(
    "/{job_id}/predict",
    response_class=Response,
    responses={200: {"model": PredictResponse, "description": "the model's outputs for each row"},
               **NOT_FOUND, **error_responses(400, 409, 413, _409="the job has no model (yet)"),
               422: {"description": "a body that is not `{\"inputs\": [[...], ...]}`, a row of the wrong "
                     "width (`row_width`, naming the row and the model's input size), a value that is not "
                     "a finite float32 number, or more rows than MAX_PREDICT_ROWS (`limit_exceeded`)"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}},
)
def predict(job_id: str, store: StoreDep, owner: OwnerDep, settings: SettingsDep, cache: ModelCacheDep,
            raw: RawBody) -> Response:
    # the body is parsed here, not by FastAPI: one orjson.loads and one np.asarray, however many rows
    try:
        rows = parse_rows(raw, settings.max_predict_rows)
        stored = cache.find(store, job_id, owner)
        model = cache.model(store, stored)
        answer = prediction(model, as_matrix(rows, model.network.n_inputs, raw))
    except UnreadableBody as error:
        raise HTTPException(400, detail=str(error)) from None
    except InvalidInputs as error:
        raise RequestValidationError(error.errors) from None
    return Response(answer, media_type="application/json")
