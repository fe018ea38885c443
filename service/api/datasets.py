"""/v1/datasets: upload (.npz or .csv), list, get. Built-ins are listed with id `builtin:<name>`."""
from __future__ import annotations

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from service.api.deps import OwnerDep, SettingsDep, StoreDep
from service.api.errors import Message, UploadProblem, error_responses
from service.specs import DatasetPublic, Task, Text, unstorable_text
from service.uploads import UploadError, UploadLimits, parse_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401))


@router.post(
    "", status_code=201, response_model=DatasetPublic,
    responses={400: {"model": UploadProblem | Message, "description": "malformed upload; `detail` gives the "
                     "reason (and the CSV line), `field` the form field; or a body that is not multipart at all"},
               413: {"model": UploadProblem | Message, "description": "the upload exceeds MAX_UPLOAD_BYTES or "
                     "MAX_DATASET_ROWS (see GET /v1/limits)"}},
)
def upload_dataset(
    store: StoreDep,
    settings: SettingsDep,
    owner: OwnerDep,
    response: Response,
    file: Annotated[UploadFile, File(description=".npz with X, y (optional X_val, y_val), or .csv with a header")],
    # optional, but a string when given: a form field cannot carry a null, so the schema offers none
    target: Annotated[Text, Form(description=".csv only: the label column's name", examples=["label"])] = None,
    name: Annotated[Text, Form(max_length=200, description="default: the file name without extension")] = None,
    task: Annotated[Task, Form(description="override the inferred task")] = None,
) -> DatasetPublic:
    """Validate the whole upload first; nothing is stored unless it is accepted."""
    dataset_name = name or PurePath(file.filename or "dataset").stem
    if (reason := unstorable_text(dataset_name)) is not None:
        raise UploadError(f"file: the file name cannot name the dataset ({reason}); give a `name`")
    parsed = parse_upload(file.file, filename=file.filename, target=target, task=task,
                          limits=UploadLimits.from_settings(settings))
    dataset = store.create_dataset(owner=owner, name=dataset_name, info=parsed.info, arrays=parsed.arrays)
    response.headers["Location"] = router.url_path_for("get_dataset", dataset_id=dataset.id)
    return dataset


@router.get("", response_model=list[DatasetPublic])
def list_datasets(store: StoreDep, owner: OwnerDep) -> list[DatasetPublic]:
    return store.list_datasets(owner=owner)


@router.get("/{dataset_id}", response_model=DatasetPublic,
            responses=error_responses(404, _404="no such dataset (or another owner's)"))
def get_dataset(dataset_id: str, store: StoreDep, owner: OwnerDep) -> DatasetPublic:
    return store.get_dataset(dataset_id, owner=owner)
