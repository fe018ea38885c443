"""The worker's Celery app, configured from Settings when first used (not at import).

`celery -A worker.app worker` or `backprop worker` runs it. Late acks with prefetch 1: a message
is acknowledged only after its job ran, and a worker holds one message at a time. Running the
same job twice at once is prevented by the database claim, not by the broker.

Each worker's main process also runs the reconciler (worker/reconciler.py) from `worker_ready`
until the worker starts shutting down, and every training process limits BLAS to `blas_threads` threads.
See docs/reliability.md.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from service.blas import limit_blas_threads
from service.broker import SCHEME as EMBEDDED_BROKER_SCHEME, broker_options
from service.config import Settings, get_settings
from service.queue import Enqueuer, celery_client

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    return dict(
        **broker_options(settings.broker_url),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.training_queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # outcomes live in the database
        task_serializer="json",
        accept_content=["json"],
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        # A pool process that dies (SIGKILL, OOM) acks its message: its job keeps a lease that
        # expires, and the reconciler sends it again then. Rejecting (requeueing) the message
        # would only bring it straight back while the dead process's lease still holds.
        task_reject_on_worker_lost=False,
        # Losing the broker connection does not kill running jobs: their database lease keeps
        # any redelivered copy from claiming them, so the running copy is the only one, and it
        # stops by itself if it ever loses the lease (docs/reliability.md).
        worker_cancel_long_running_tasks_on_connection_loss=False,
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
def _prepare_embedded_broker(sender=None, **_kwargs) -> None:
    # the embedded broker's file lives in ./data by default, which may not exist yet
    url = get_settings().broker_url
    if url.startswith(EMBEDDED_BROKER_SCHEME + "sqlite:///"):
        Path(url.removeprefix(EMBEDDED_BROKER_SCHEME + "sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@worker_init.connect
def _limit_blas_in_main_process(**_kwargs) -> None:
    # solo/threads pools train in the main process
    limit_blas_threads(get_settings().blas_threads)


@worker_init.connect
def _share_a_shutdown_flag(**_kwargs) -> None:
    # created before the pool forks, so every training process sees the main process set it
    import multiprocessing

    from worker import training

    training.WORKER_SHUTDOWN = multiprocessing.get_context("fork").Event()


@worker_shutting_down.connect
def _hand_back_running_jobs(how: str | None = None, **_kwargs) -> None:
    # a warm shutdown waits for running tasks: make them hand their jobs back between batches
    # instead of training to the end (SIGTERM to the main process alone: docker stop, Kubernetes)
    from worker import training

    if how == "Warm" and training.WORKER_SHUTDOWN is not None:
        training.WORKER_SHUTDOWN.set()


_reconciler = None  # the ReconcilerThread of this worker's main process


@worker_ready.connect
def _start_reconciler(**_kwargs) -> None:
    global _reconciler
    from service.store import Store
    from worker.reconciler import Reconciler, ReconcilerThread

    settings = get_settings()
    if _reconciler is not None:  # worker_ready comes once per worker; never run two sweepers
        return
    if settings.reconcile_interval_seconds <= 0:
        log.info("reconciler off (RECONCILE_INTERVAL_SECONDS=0)")
        return
    store, enqueuer = Store(settings), Enqueuer(celery_client(settings))

    def close() -> None:
        enqueuer.close()
        store.dispose()

    reconciler = Reconciler(store, enqueuer.enqueue, requeue_after_seconds=settings.requeue_after_seconds,
                            orphan_sweep_seconds=settings.orphan_sweep_interval_seconds,
                            orphan_grace_seconds=settings.orphan_grace_seconds)
    _reconciler = ReconcilerThread(reconciler, settings.reconcile_interval_seconds, on_stop=close)
    _reconciler.start()
    log.info("reconciler started: every %.1f s, queued jobs re-sent after %.1f s",
             settings.reconcile_interval_seconds, settings.requeue_after_seconds)


@worker_shutting_down.connect
def _pause_reconciler(**_kwargs) -> None:
    # at once (this runs in the signal handler, so no joining here): no more re-sends for a
    # worker that is draining to take
    if _reconciler is not None:
        _reconciler.stop(wait=False)


@worker_shutdown.connect
def _stop_reconciler(**_kwargs) -> None:
    global _reconciler
    if _reconciler is not None:
        _reconciler.stop()
        _reconciler = None


@worker_process_init.connect
def _init_training_process(**_kwargs) -> None:
    global _reconciler
    limit_blas_threads(get_settings().blas_threads)
    if _reconciler is not None:  # forked after the reconciler started: its connections are the parent's
        _reconciler.reconciler.forget_connections()
        _reconciler = None
