"""The API under test: a TestClient on create_app with a real Store and a real Celery enqueuer."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.config import Settings
from service.store import Store
from tests.utils.broker import TaskMessage, take_training_messages


@dataclass
class Api:
    client: TestClient
    store: Store
    settings: Settings

    def published(self) -> list[TaskMessage]:
        self.client.app.state.enqueuer.flush()  # the API publishes on its enqueuer's thread
        return take_training_messages(self.settings.broker_url)

    def stored_dataset_files(self) -> list[Path]:
        return sorted((Path(self.settings.artifact_url) / "datasets").glob("*"))

    def upload_npz(self, name: str = "upload", **arrays: np.ndarray):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return self.client.post("/v1/datasets", files={"file": (f"{name}.npz", buffer.getvalue())},
                                data={"name": name})

    def upload_csv(self, text: str, target: str | None = "label", name: str = "table"):
        data = {"target": target} if target is not None else {}
        return self.client.post("/v1/datasets", files={"file": (f"{name}.csv", text.encode())}, data=data)

    def submit(self, **spec):
        return self.client.post("/v1/jobs", json=spec)


def job_body(builtin: str = "xor", **overrides) -> dict:
    """A JSON job spec on a builtin dataset."""
    return {"dataset": {"builtin": builtin}, "epochs": 3, **overrides}
