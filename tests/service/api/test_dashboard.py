"""The dashboard's pages and files are served open (they hold no data) without opening /v1."""
from __future__ import annotations

import pytest

from service.web import WEB_DIR


@pytest.fixture
def secured(make_api):
    return make_api(auth_required=True)


@pytest.mark.parametrize("path, marker", [("/", 'id="jobs"'), ("/jobs/0123abcd", 'id="loss-chart"'),
                                          ("/compare?ids=a,b", 'id="compare-loss"')])
def test_pages_are_served_without_a_key(secured, path, marker):
    answer = secured.client.get(path)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert marker in answer.text and 'id="key-dialog"' in answer.text


@pytest.mark.parametrize("path", ["/static/common.js", "/static/style.css", "/static/vendor/uplot/uPlot.iife.min.js"])
def test_static_files_are_served_without_a_key(secured, path):
    assert secured.client.get(path).status_code == 200


def test_v1_still_needs_a_key_and_other_paths_are_not_opened(secured):
    assert secured.client.get("/v1/jobs").status_code == 401
    assert secured.client.get("/jobs").status_code == 401  # only /jobs/<id> is a page
    for escape in ("/static/../config.py", "/static/%2e%2e/config.py", "/static/..%2f..%2fconfig.py"):
        assert secured.client.get(escape).status_code in (401, 404)  # never a file outside service/web
    assert secured.client.get("/v1/jobs/0123/events").status_code == 401


def test_pages_stay_out_of_the_schema(secured):
    paths = secured.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/compare" not in paths and not any(p.startswith("/jobs") for p in paths)
    assert "/v1/jobs/{job_id}/events" in paths


def test_the_chart_library_is_vendored_with_its_licence():
    vendored = WEB_DIR / "vendor" / "uplot"
    assert "MIT License" in (vendored / "LICENSE").read_text()
    assert "1.6.32" in (vendored / "VERSION").read_text() and (vendored / "uPlot.iife.min.js").stat().st_size > 40_000
