"""What every part of the Store shares: settings, the database, the clock and id source.

Each concern (datasets, API-side jobs, worker leases, checkpoints) is a mixin in its own
module; `service.store.Store` puts them together. Every method is one transaction
(`session_scope`); ORM rows never leave the package.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.config import Settings
from service.store.artifacts import ArtifactStore, open_artifact_store
from service.store.db import Database
from service.store.errors import NotFound


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_hex_id() -> str:
    return uuid.uuid4().hex


def owned_row(session: Session, row_type: type, kind: str, row_id: str, owner: str | None, *,
              refresh: bool = False):
    """The `row_type` row `row_id` if `owner` may see it (None: any owner), else NotFound: a
    missing row and another owner's get the same answer. `refresh` rereads a row the session holds."""
    query = select(row_type).where(row_type.id == row_id)
    if refresh:
        query = query.execution_options(populate_existing=True)
    row = session.scalars(query).one_or_none()
    if row is None or (owner is not None and row.owner != owner):
        raise NotFound(kind, row_id)
    return row


class StoreBase:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None,
                 new_id: Callable[[], str] | None = None):
        self.settings = settings
        self.max_attempts = settings.max_attempts
        self._db = Database(settings.database_url)
        self.artifacts: ArtifactStore = open_artifact_store(
            settings.artifact_url, endpoint_url=settings.s3_endpoint_url, work_dir=settings.work_dir)
        self._clock = clock or utcnow
        self._new_id = new_id or new_hex_id

    @property
    def engine(self):
        return self._db.engine

    @contextmanager
    def session_scope(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commits on success, rolls back on error (see service.store.db)."""
        with self._db.session_scope(write=write) as session:
            yield session

    def dispose(self, *, close: bool = True) -> None:
        self._db.dispose(close=close)
        if close:
            self.artifacts.close()

    def ping(self) -> None:
        """Raises if the database cannot answer."""
        with self.session_scope() as session:
            session.execute(text("SELECT 1"))

    # artifact keys, built from ids only

    @staticmethod
    def dataset_key(dataset_id: str) -> str:
        return f"datasets/{dataset_id}.npz"

    @staticmethod
    def checkpoint_key(job_id: str, epoch: int) -> str:
        return f"jobs/{job_id}/checkpoints/epoch-{epoch:06d}.npz"

    @staticmethod
    def model_key(job_id: str) -> str:
        return f"jobs/{job_id}/model.npz"

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return aware datetimes")
        return now
