"""Alembic migrations build exactly the models' schema, and SQLite is configured for concurrency."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

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
