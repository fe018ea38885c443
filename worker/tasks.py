"""Celery tasks. `backprop.train_job` takes a job id only and re-reads everything from the database."""
from __future__ import annotations

import os
import signal
import socket
import uuid

from celery.signals import worker_process_init

from service.config import get_settings
from service.queue import TRAIN_TASK
from service.store import Store
from worker import training
from worker.app import app
from worker.training import run_job

_store: Store | None = None
_store_pid: int | None = None


def process_store() -> Store:
    """This process's Store, created on first use: engines and pools are never shared across fork."""
    global _store, _store_pid
    if _store is None or _store_pid != os.getpid():
        _store, _store_pid = Store(get_settings()), os.getpid()
    return _store


def set_process_store(store: Store | None) -> None:
    """Use `store` for tasks run in this process (tests, embedding); None forgets it."""
    global _store, _store_pid
    _store, _store_pid = store, (os.getpid() if store is not None else None)


_pool_child_pid: int | None = None  # set in Celery's prefork children, where jobs train
_handoff_pid: int | None = None


@worker_process_init.connect
def _forget_parent_store(**_kwargs) -> None:
    global _store, _store_pid, _pool_child_pid
    if _store is not None:
        _store.dispose(close=False)  # the parent's connections are the parent's to close
    _store, _store_pid = None, None
    _pool_child_pid = os.getpid()


def _hand_back_on_sigterm(previous):
    """SIGTERM to a pool child while it trains (a warm shutdown of the worker's whole process
    group, as systemd sends): stop between batches and hand the job back instead of dying
    mid-epoch. When idle, or at a second SIGTERM, the pool's own handler runs (the child exits)."""

    def handler(signum, frame) -> None:
        if training.RUNNING.is_set() and not training.SHUTDOWN.is_set():
            training.SHUTDOWN.set()
            return
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler


def _install_handoff() -> None:
    """Once per pool child, at its first task: billiard sets its own SIGTERM handler after
    worker_process_init, so installing it there would be undone."""
    global _handoff_pid
    if _pool_child_pid != os.getpid() or _handoff_pid == os.getpid():
        return  # solo pool or tests: SIGTERM stays Celery's warm shutdown
    signal.signal(signal.SIGTERM, _hand_back_on_sigterm(signal.getsignal(signal.SIGTERM)))
    _handoff_pid = os.getpid()


def new_worker_id() -> str:
    """Unique per task execution, so a redelivery in the same process is a different lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: str) -> str:
    _install_handoff()
    store = process_store()
    return run_job(store, job_id, worker_id=new_worker_id(), lease_seconds=store.settings.lease_seconds,
                   enqueue=lambda released: app.send_task(TRAIN_TASK, args=[released], task_id=released,
                                                          queue=store.settings.training_queue))
