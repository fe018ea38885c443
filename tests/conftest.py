"""Shared fixtures live in tests/utils; importing them here makes them visible to every test."""
from tests.utils.db import (  # noqa: F401 - fixtures
    clock, database_url, make_store, pg_database_url, settings_factory, sqlite_database_url,
    sqlite_template, store,
)
from tests.utils.s3 import s3_server, s3_settings  # noqa: F401,E402 - fixtures
