"""The dashboard in a real browser against a real `backprop api` and `backprop worker`, auth on:
the jobs table lists a job, a job page draws its curves and they gain points while it trains,
compare overlays two jobs. Screenshots go to the test's tmp dir (BACKPROP_SCREENSHOTS=DIR copies
the job page's there too, e.g. for docs/)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.stack import BIN
from service.client import Client
from tests.integration.harness import running_stack

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WAIT_MS = 120_000
TRAINING = {"name": "digits-live", "dataset": {"builtin": "digits"}, "epochs": 10_000, "batch_size": 16,
            "model": {"hidden_layers": [{"units": 64}]}, "checkpoint": {"every_epochs": 100}}
PALETTE = ("#2f6fde", "#e4572e")  # the first two series colours of common.js

# pixels of a chart's canvas that are not background, and how many are close to each colour given
CANVAS_PIXELS = """([selector, colours]) => {
  const canvas = document.querySelector(selector + ' canvas');
  const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const rgb = colours.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  let drawn = 0; const near = rgb.map(() => 0);
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] === 0) continue;
    drawn++;
    rgb.forEach(([r, g, b], k) => {
      if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60) near[k]++;
    });
  }
  return {drawn, near};
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dashboard")
    with running_stack(workdir, f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db",
                       extra_env={"AUTH_REQUIRED": "true"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def token(stack) -> str:
    return subprocess.run([str(BIN / "backprop"), "keys", "create", "--owner", "alice"], env=stack.env,
                          cwd=stack.workdir, capture_output=True, text=True, timeout=60, check=True).stdout.strip()


@pytest.fixture(scope="module")
def bp(stack, token):
    with Client(stack.url, api_key=token) as client:
        yield client


@pytest.fixture(scope="module")
def tab(browser, stack, token):
    """One browser tab for the module, where the key is entered once: the first page asks for it
    (the API answered 401) and the tab keeps it (sessionStorage) for every page after."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(stack.url + "/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", token)
    page.click("#key-submit")
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    yield page
    context.close()


def shoot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_the_jobs_table_lists_a_job(tab, stack, token, bp, tmp_path):
    job = bp.submit_job({"name": "table-job", "dataset": {"builtin": "iris"}, "epochs": 5})
    tab.goto(stack.url + "/")
    row = tab.wait_for_selector(f'tr[data-job-id="{job.id}"]')  # the key given once is still there
    assert not tab.is_visible("#key-dialog")
    assert "table-job" in row.inner_text()
    bp.wait(job.id)
    tab.wait_for_selector(f'tr[data-job-id="{job.id}"][data-status="succeeded"]')  # the table refreshes itself
    assert "5/5" in tab.inner_text(f'tr[data-job-id="{job.id}"]')
    shoot(tab, tmp_path, "jobs")
    assert tab.errors == []


def test_the_job_page_draws_curves_that_grow_while_the_job_trains(tab, stack, bp, tmp_path):
    job = bp.submit_job(TRAINING)
    try:
        for event in bp.events(job.id):  # open the page once it is training
            if event.event == "epoch":
                break
        tab.goto(f"{stack.url}/jobs/{job.id}")  # same tab: no key asked again
        tab.wait_for_function("document.querySelector('#loss-chart').dataset.points > 0")
        first = int(tab.get_attribute("#loss-chart", "data-points"))
        tab.wait_for_function(f"document.querySelector('#loss-chart').dataset.points > {first + 5}")  # live
        assert tab.is_visible("#job-status .badge.running")
        assert not tab.is_visible("#key-dialog")
        for chart in ("#loss-chart", "#metric-chart"):
            pixels = tab.evaluate(CANVAS_PIXELS, [chart, list(PALETTE)])
            assert pixels["drawn"] > 500 and all(count > 50 for count in pixels["near"]), (chart, pixels)
        assert "Accuracy" in tab.inner_text("#metric-chart")
        assert '"batch_size": 16' in tab.inner_text("#spec")
        path = shoot(tab, tmp_path, "job")
        if os.environ.get("BACKPROP_SCREENSHOTS"):
            shutil.copy(path, Path(os.environ["BACKPROP_SCREENSHOTS"]) / "dashboard.png")
    finally:
        bp.cancel_job(job.id)
    tab.wait_for_selector("#job-status .badge.cancelled")  # the stream's status and end reach the page
    assert tab.errors == []


def test_compare_overlays_two_jobs_with_a_legend(tab, stack, bp, tmp_path):
    jobs = [bp.submit_job({"name": f"lr-{lr}", "dataset": {"builtin": "digits"}, "epochs": 12,
                           "optimizer": {"name": "sgd", "learning_rate": lr}}) for lr in (0.01, 0.1)]
    for job in jobs:
        assert bp.wait(job.id).status == "succeeded"
    tab.goto(stack.url + "/")
    for job in jobs:
        tab.check(f'tr[data-job-id="{job.id}"] input[type=checkbox]')
    tab.click("#compare")
    tab.wait_for_url("**/compare?ids=*")
    tab.wait_for_function("document.querySelector('#compare-loss').dataset.points == 12")
    assert tab.get_attribute("#compare-loss", "data-series") == "2"
    legend = tab.inner_text("#compare-loss .u-legend")
    assert all(f"lr-{lr} ({job.id[:8]})" in legend for lr, job in zip((0.01, 0.1), jobs))
    for chart in ("#compare-loss", "#compare-metric"):
        pixels = tab.evaluate(CANVAS_PIXELS, [chart, list(PALETTE)])
        assert all(count > 50 for count in pixels["near"]), (chart, pixels)  # both jobs' curves drawn
    shoot(tab, tmp_path, "compare")
    assert tab.errors == []
