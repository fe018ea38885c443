"""Alembic migrations build exactly the models' schema, and SQLite is configured for concurrency."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from service.config import Settings
from service.store import Store, upgrade
from service.store.migrate import downgrade
from service.store.models import Base


def test_migrated_schema_matches_models(database_url):
    engine = create_engine(Settings(database_url=database_url).database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_drops_everything(settings_factory, tmp_path):
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}")
    upgrade(settings)  # creates the folder and the file
    upgrade(settings)
    engine = create_engine(settings.database_url)
    try:
        assert {"datasets", "jobs", "job_tags", "epoch_metrics", "checkpoints"} <= set(inspect(engine).get_table_names())
        downgrade(settings, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_and_busy_timeout(sqlite_database_url, settings_factory):
    store = Store(settings_factory(database_url=sqlite_database_url))
    try:
        with store.session_scope() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        store.dispose()


def test_0005_keeps_the_history_and_holds_one_row_per_fold_epoch(settings_factory, tmp_path):
    """SQLite's batch copy of epoch_metrics keeps its rows; NULL folds (plain jobs) never collide."""
    settings = settings_factory(database_url=f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(settings, "0004")
    engine = create_engine(settings.database_url)
    row = ("INSERT INTO epoch_metrics (job_id, epoch, is_best, created_at{}) "
           "VALUES ('j', :epoch, 0, '2026-11-23 00:00:00.000000'{})")
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO jobs (id, name, spec, dataset_id, status, epochs, progress_epoch, "
                                    "attempt, cancel_requested, created_at) VALUES ('j', '', '{}', 'builtin:xor', "
                                    "'running', 4, 2, 1, 0, '2026-11-23 00:00:00.000000')"))
            for epoch in (1, 2):
                connection.execute(text(row.format("", "")), {"epoch": epoch})
        upgrade(settings)
        with engine.begin() as connection:
            kept = connection.execute(text("SELECT epoch, fold, fold_epoch FROM epoch_metrics ORDER BY epoch")).all()
            assert [tuple(r) for r in kept] == [(1, None, None), (2, None, None)]
            connection.execute(text(row.format(", fold, fold_epoch", ", 0, 1")), {"epoch": 3})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(row.format(", fold, fold_epoch", ", 0, 1")), {"epoch": 4})
    finally:
        engine.dispose()
