"""Shared fixtures live in tests/utils; importing them here makes them visible to every test."""
import pytest

from tests.utils import no_5xx
from tests.utils.db import (  # noqa: F401 - fixtures
    clock, database_url, make_store, pg_database_url, settings_factory, sqlite_database_url,
    sqlite_template, store,
)
from tests.utils.s3 import s3_server, s3_settings  # noqa: F401,E402 - fixtures


@pytest.fixture(scope="session", autouse=True)
def _watch_for_5xx():
    undo = no_5xx.install()
    yield
    undo()


@pytest.fixture(autouse=True)
def no_5xx_answers(request):
    """Fail a test whose API (in process, or a harness `backprop api`) answered a 5xx it did not
    declare with @pytest.mark.allows_5xx."""
    no_5xx.SEEN.clear()
    yield
    seen, no_5xx.SEEN[:] = list(no_5xx.SEEN), []
    if seen and request.node.get_closest_marker("allows_5xx") is None:
        pytest.fail(f"the API answered {len(seen)} 5xx: {seen[:5]}; a test that provokes them on purpose "
                    "is marked @pytest.mark.allows_5xx", pytrace=False)
