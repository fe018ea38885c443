"""The hostile-input suite uses the API fixtures of tests/service/api (`api`, `make_api`)."""
from tests.service.api.conftest import api, make_api  # noqa: F401 - fixtures
