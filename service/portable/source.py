"""Where the API finds a job's model and reads its bytes: the only code that reads a model file.

`find_model` asks the database (owner isolation: 404; no model yet: 409) and reads no bytes, so a
cached model costs at most one query. `read_model_bytes` is the single read of the object itself,
from the artifact store (a local folder or S3).
"""
from __future__ import annotations

import hashlib

from service.store import Store, StoredObject


class ModelFileMismatch(RuntimeError):
    """The stored bytes do not hash to the sha256 recorded when the model was saved."""


def find_model(store: Store, job_id: str, owner: str | None) -> StoredObject:
    return store.model_file(job_id, owner=owner)


def read_model_bytes(store: Store, model: StoredObject) -> bytes:
    """The model file's bytes, checked against their recorded sha256."""
    with store.artifacts.open(model.key) as handle:
        content = handle.read()
    if hashlib.sha256(content).hexdigest() != model.sha256:
        raise ModelFileMismatch(f"model {model.key}: the stored bytes do not match the recorded sha256 {model.sha256}")
    return content
