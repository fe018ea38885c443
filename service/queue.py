"""The API's side of the broker: send training tasks by name, never importing worker code."""
from __future__ import annotations

from celery import Celery

from service.config import Settings

TRAIN_TASK = "backprop.train_job"  # worker.tasks registers its task under this name
TRAINING_QUEUE = "training"


def celery_client(settings: Settings) -> Celery:
    """A Celery app used only to publish; the worker builds its own in worker/app.py."""
    client = Celery("backprop-api", broker=settings.broker_url, set_as_current=False)
    client.conf.update(task_default_queue=TRAINING_QUEUE, broker_connection_retry_on_startup=True)
    return client


class Enqueuer:
    """Publishes a job's task; the Celery task id is the job id, so duplicates are recognisable."""

    def __init__(self, client: Celery):
        self._client = client

    def enqueue(self, job_id: str) -> None:
        self._client.send_task(TRAIN_TASK, args=[job_id], task_id=job_id, queue=TRAINING_QUEUE)
