"""Alembic environment: the URL comes from Settings, the engine from service.store.db."""
from __future__ import annotations

from alembic import context

from service.config import get_settings
from service.store.db import make_engine
from service.store.models import Base

config = context.config
settings = config.attributes.get("settings") or get_settings()
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=settings.database_url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=settings.is_sqlite)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            # batch mode: SQLite cannot ALTER most things, so later migrations copy tables instead
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
