"""The suite's own guard (issue 11): a 5xx from an in-process app or in a harness API log is seen
(tests/utils/no_5xx.py; tests/conftest.py fails a test that saw one unless it allows them)."""
from __future__ import annotations

import pytest

from tests.utils import no_5xx


@pytest.mark.allows_5xx
def test_an_in_process_5xx_is_recorded(api, monkeypatch):
    def unavailable(*args, **kwargs):
        from service.store import ArtifactError
        raise ArtifactError("gone")

    monkeypatch.setattr(api.store, "list_datasets", unavailable)
    assert api.client.get("/v1/datasets").status_code == 503
    assert api.client.get("/healthz").status_code == 200
    assert no_5xx.SEEN == ["GET /v1/datasets -> 503"]


@pytest.mark.allows_5xx
def test_5xx_lines_of_a_harness_api_log_are_recorded(tmp_path):
    (tmp_path / "api.log").write_text(
        'INFO:     127.0.0.1:5 - "GET /healthz HTTP/1.1" 200 OK\n'
        'INFO:     127.0.0.1:5 - "POST /v1/jobs HTTP/1.1" 500 Internal Server Error\n'
        'INFO:     127.0.0.1:5 - "GET /v1/jobs?limit=5 HTTP/1.1" 503 Service Unavailable\n')
    (tmp_path / "worker0.log").write_text('"GET /x HTTP/1.1" 500\n')  # not an API log
    no_5xx.scan_api_logs(tmp_path)
    assert no_5xx.SEEN == ["POST /v1/jobs -> 500 (api.log)", "GET /v1/jobs?limit=5 -> 503 (api.log)"]


def test_a_clean_test_sees_none(api):
    assert api.client.get("/v1/jobs").status_code == 200
    assert no_5xx.SEEN == []
