"""Celery tasks. `backprop.train_job` takes a job id only and re-reads everything from the database."""
from __future__ import annotations

import os
import socket
import uuid

from celery.signals import worker_process_init

from service.config import get_settings
from service.queue import TRAIN_TASK
from service.store import Store
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


@worker_process_init.connect
def _forget_parent_store(**_kwargs) -> None:
    global _store, _store_pid
    if _store is not None:
        _store.dispose(close=False)  # the parent's connections are the parent's to close
    _store, _store_pid = None, None


def new_worker_id() -> str:
    """Unique per task execution, so a redelivery in the same process is a different lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: str) -> str:
    store = process_store()
    return run_job(store, job_id, worker_id=new_worker_id(), lease_seconds=store.settings.lease_seconds)
