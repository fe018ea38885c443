"""Engine and sessions: one engine per process, SQLite tuned for API and workers writing together.

SQLite: WAL (readers never block the writer), a 30 s busy timeout, and the pysqlite recipe
(driver transaction handling off, BEGIN emitted here) so that read-then-write transactions start
with BEGIN IMMEDIATE: they take the write lock up front and wait for it, instead of failing with
"database is locked" when a deferred transaction tries to upgrade its read lock.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def standard_json(value) -> str:
    """What JSON columns store: standard JSON only. A NaN or infinity raises (ValueError) rather
    than being written as a token other readers refuse or read back as null."""
    return json.dumps(value, allow_nan=False)

_IMMEDIATE = "backprop_sqlite_immediate"  # execution option read by the "begin" listener


def sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite URL (None for in-memory or non-sqlite URLs)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, json_serializer=standard_json)

    path = sqlite_file(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                           json_serializer=standard_json)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see "begin" below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL: atomic and safe against process crashes
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """The engine and the only session factories of a process."""

    def __init__(self, database_url: str):
        self.engine = make_engine(database_url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        # Same pool; connections checked out through this one begin with BEGIN IMMEDIATE on SQLite.
        self._writes = sessionmaker(self.engine.execution_options(**{_IMMEDIATE: True}), expire_on_commit=False)

    @contextmanager
    def session_scope(self, *, write: bool = False) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        write=True for any transaction that writes after reading: on SQLite it takes the write
        lock at BEGIN; PostgreSQL relies on row locks and compare-and-set UPDATEs instead.
        """
        factory = self._writes if write else self._reads
        with factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self, *, close: bool = True) -> None:
        """Drop pooled connections. close=False in a forked child: the parent still owns them."""
        self.engine.dispose(close=close)
