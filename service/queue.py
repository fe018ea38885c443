"""The API's side of the broker: send training tasks by name, never importing worker code."""
from __future__ import annotations

import logging
import queue
import threading

from celery import Celery

from service.broker import broker_options
from service.config import Settings

log = logging.getLogger(__name__)

TRAIN_TASK = "backprop.train_job"  # worker.tasks registers its task under this name
TRAINING_QUEUE = "training"  # the default of Settings.training_queue


def celery_client(settings: Settings) -> Celery:
    """A Celery app used only to publish; the worker builds its own in worker/app.py."""
    client = Celery("backprop-api", set_as_current=False)
    client.conf.update(task_default_queue=settings.training_queue, broker_connection_retry_on_startup=True,
                       **broker_options(settings.broker_url))
    return client


class Enqueuer:
    """Publishes a job's task; the Celery task id is the job id, so duplicates are recognisable.

    `enqueue` publishes now and raises if it cannot. `send_later` hands the id to one publishing
    thread and returns at once (the API answers without waiting for the broker): ids are
    published in the order they were handed over, and a failure is logged, not raised, because
    the committed row is what counts and the workers' reconciler re-sends queued jobs. `flush`
    waits for the thread to catch up; `close` flushes first.
    """

    def __init__(self, client: Celery):
        self._client = client
        self.queue: str = client.conf.task_default_queue
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def enqueue(self, job_id: str) -> None:
        self._client.send_task(TRAIN_TASK, args=[job_id], task_id=job_id, queue=self.queue)

    def send_later(self, job_id: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish_pending, name="backprop-publisher", daemon=True)
                self._thread.start()
            self._pending.put(job_id)

    def flush(self) -> None:
        """Until every id handed to send_later so far has been published (or failed to be)."""
        self._pending.join()

    def _publish_pending(self) -> None:
        while (job_id := self._pending.get()) is not None:
            try:
                self.enqueue(job_id)
            except Exception:  # noqa: BLE001 - the row is the source of truth; the reconciler re-sends it
                log.exception("job %s is stored but could not be enqueued; it stays queued", job_id)
            finally:
                self._pending.task_done()
        self._pending.task_done()

    def ping(self, timeout: float = 2.0) -> None:
        """Reach the broker and declare the training queue, as a publish would; raise if unreachable.

        Declaring (not just connecting) matters for the SQLAlchemy transport, which opens its
        database lazily.
        """
        with self._client.connection_for_write(connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            connection.default_channel.queue_declare(queue=self.queue, durable=True, auto_delete=False)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._pending.put(None)  # after everything already handed over
            thread.join()
        self._client.close()
