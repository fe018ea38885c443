"""The API's side of the broker: send training tasks by name, never importing worker code."""
from __future__ import annotations

from celery import Celery

from service.broker import broker_options
from service.config import Settings

TRAIN_TASK = "backprop.train_job"  # worker.tasks registers its task under this name
TRAINING_QUEUE = "training"  # the default of Settings.training_queue


def celery_client(settings: Settings) -> Celery:
    """A Celery app used only to publish; the worker builds its own in worker/app.py."""
    client = Celery("backprop-api", set_as_current=False)
    client.conf.update(task_default_queue=settings.training_queue, broker_connection_retry_on_startup=True,
                       **broker_options(settings.broker_url))
    return client


class Enqueuer:
    """Publishes a job's task; the Celery task id is the job id, so duplicates are recognisable."""

    def __init__(self, client: Celery):
        self._client = client
        self.queue: str = client.conf.task_default_queue

    def enqueue(self, job_id: str) -> None:
        self._client.send_task(TRAIN_TASK, args=[job_id], task_id=job_id, queue=self.queue)

    def ping(self, timeout: float = 2.0) -> None:
        """Reach the broker and declare the training queue, as a publish would; raise if unreachable.

        Declaring (not just connecting) matters for the SQLAlchemy transport, which opens its
        database lazily.
        """
        with self._client.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            connection.default_channel.queue_declare(queue=self.queue, durable=True, auto_delete=False)

    def close(self) -> None:
        self._client.close()
