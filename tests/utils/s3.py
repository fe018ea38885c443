"""S3 for tests: one moto server (server mode, on loopback) per test session, a bucket per test.

moto is installed by `make test` (the test extra); a server that cannot start fails the test."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.stack import S3Server, ServiceUnavailable


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        server.start()
    except ServiceUnavailable as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server, settings_factory, monkeypatch):
    """settings_factory(**overrides) with artifacts in a fresh bucket of the session's S3 server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)  # boto3 reads the credentials from the environment

    def make(**overrides):
        return settings_factory(artifact_url=s3_server.new_bucket(), s3_endpoint_url=s3_server.endpoint_url,
                                **overrides)

    return make
