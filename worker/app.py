"""The worker's Celery app, configured from Settings when first used (not at import).

`celery -A worker.app worker` or `backprop worker` runs it. Late acks with prefetch 1: a message
is acknowledged only after its job ran, and a worker holds one message at a time. Running the
same job twice at once is prevented by the database claim, not by the broker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init

from service.config import Settings, get_settings


def celery_config(settings: Settings) -> dict[str, Any]:
    return dict(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.training_queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # outcomes live in the database
        task_serializer="json",
        accept_content=["json"],
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
    )


def create_app(settings: Settings | None = None) -> Celery:
    app = Celery("backprop", include=["worker.tasks"])
    if settings is not None:
        app.conf.update(celery_config(settings))
    else:
        app.add_defaults(lambda: celery_config(get_settings()))  # read when the config is first needed
    return app


app = create_app()


@worker_init.connect
def _make_embedded_broker_folder(sender=None, **_kwargs) -> None:
    # the embedded broker's file lives in ./data by default, which may not exist yet
    url = str(sender.app.conf.broker_url) if sender is not None else ""
    if url.startswith("sqla+sqlite:///"):
        Path(url.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
