"""Database fixtures shared by store, API and worker tests.

Use `store` (a migrated Store, once on SQLite and once on PostgreSQL) or `make_store(**overrides)`
for one with other settings; `settings_factory(**overrides)` builds Settings under tmp_path;
`clock` is the FakeClock the stores use. PostgreSQL: one fresh database per test session at
127.0.0.1:5432 (user postgres, else root; trust auth), dropped at the end, truncated between
tests. Unreachable PostgreSQL fails the test under CI=true and skips it otherwise.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from service.config import Settings
from service.store import Store, upgrade
from service.store.models import Base

PG_HOST, PG_PORT, PG_ADMIN_DB = "127.0.0.1", 5432, "test"
PG_USERS = ("postgres", "root")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


class FakeClock:
    """Aware UTC time that moves only when told to (plus `step` per call, to order rows)."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc),
                 step: timedelta = timedelta(milliseconds=1)):
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class SequentialIds:
    """Deterministic 32-hex-digit ids: 000…001, 000…002, ..."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.count:032x}"


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test session."""
    try:
        import psycopg
    except ImportError as error:  # pragma: no cover - psycopg is a dependency
        unavailable(f"psycopg is not installed: {error}")
    admin, user, errors = None, None, []
    for user in PG_USERS:
        try:
            admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=PG_ADMIN_DB,
                                    autocommit=True, connect_timeout=3)
            break
        except psycopg.Error as error:
            errors.append(f"{user}: {error}")
    if admin is None:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({'; '.join(errors)})")
    name = f"bp_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
            upgrade(Settings(database_url=url))
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating every time)."""
    path = tmp_path_factory.mktemp("template") / "backprop.db"
    upgrade(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A migrated, empty database: SQLite in tmp_path, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "backprop.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database_url")
    truncate(url)
    return url


@pytest.fixture
def sqlite_database_url(tmp_path, sqlite_template) -> str:
    """Only SQLite, for tests that do not need to run twice."""
    path = tmp_path / "backprop.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def truncate(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(Settings(database_url=url).database_url)
    try:
        with engine.begin() as connection:
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def settings_factory(tmp_path) -> Callable[..., Settings]:
    """Settings rooted in tmp_path (embedded SQLite, SQLite broker, artifacts); override any field."""

    def make(**overrides) -> Settings:
        values = dict(
            database_url=f"sqlite:///{tmp_path / 'backprop.db'}",
            broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
            artifact_url=str(tmp_path / "artifacts"),
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(database_url, settings_factory, clock) -> Iterator[Callable[..., Store]]:
    """Stores on the parametrized database, sharing `clock`; disposed after the test."""
    stores: list[Store] = []
    new_id = SequentialIds()  # shared, so two stores on one database never reuse an id

    def make(**overrides) -> Store:
        store = Store(settings_factory(database_url=database_url, **overrides), clock=clock, new_id=new_id)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.dispose()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()
