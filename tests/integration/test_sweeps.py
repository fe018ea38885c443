"""A sweep with ASHA end to end on Redis + PostgreSQL: `backprop sweeps submit --wait` → API → real
workers → trials released as others end, poor ones pruned at their first rung → the sweep's answer,
the trials as ordinary jobs (listed, downloaded), and the other sweep commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack

import pytest

from service.client import Client
from tests.integration.harness import fresh_redis, postgres_database, running_stack

pytestmark = pytest.mark.integration

GOOD, POOR = (0.05, 0.03), (1e-5, 2e-5)  # adam's learning rate on iris: learns in an epoch, or nothing
SWEEP = {
    "name": "iris-lr",
    "base": {"dataset": {"builtin": "iris"}, "epochs": 4, "batch_size": 16},
    "space": {"optimizer.learning_rate": {"choice": [*GOOD, *POOR]}},
    "method": "grid", "max_trials": 4, "max_concurrent": 2, "metric": "val_loss", "mode": "min",
    "asha": {"grace_period": 1, "reduction_factor": 2},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweeps")
    with ExitStack() as resources:
        database_url = resources.enter_context(postgres_database())
        yield resources.enter_context(running_stack(workdir, database_url, fresh_redis(), workers=2))


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKPROP_URL": stack.url}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=stack.workdir,
                          capture_output=True, text=True, timeout=300)


def test_a_sweep_with_asha_runs_to_completion_pruning_the_poor_trials(stack, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps(SWEEP))  # JSON is YAML; its 1e-05 must stay a number
    done = cli(stack, "sweeps", "submit", str(spec), "--wait", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr + stack.logs()
    sweep = json.loads(done.stdout)
    assert sweep["status"] == "succeeded"
    assert sweep["counts"]["succeeded"] == 4 and sum(sweep["counts"].values()) == 4
    by_rate = {t["params"]["optimizer.learning_rate"]: t for t in sweep["trials"]}
    # two at a time in grid order: the poor trials are released only after a good one ended, so
    # both good results are at rung 1 before theirs, and each falls below the cutoff there; of
    # the good pair, the first to reach a rung always goes on (the second must at least match it)
    pruned = [by_rate[rate] for rate in POOR]
    assert [t["stop_reason"] for t in pruned] == ["pruned", "pruned"], sweep["trials"]
    assert "completed" in {by_rate[rate]["stop_reason"] for rate in GOOD}
    assert sweep["best"]["params"]["optimizer.learning_rate"] in GOOD
    metrics = [t["metric"] for t in sweep["trials"]]
    assert metrics == sorted(metrics)  # best first, mode min

    with stack.client() as http:
        trials = http.get("/v1/jobs", params={"sweep_id": sweep["id"]}).json()["items"]
        assert {job["id"] for job in trials} == {t["job_id"] for t in sweep["trials"]}
        job = http.get(f"/v1/jobs/{pruned[0]['job_id']}").json()
        assert (job["status"], job["stop_reason"], job["progress"]["epoch"]) == ("succeeded", "pruned", 1)
        model = http.get(f"/v1/jobs/{pruned[0]['job_id']}/model")
        assert model.status_code == 200 and model.content[:2] == b"PK"  # the pruned trial's model is kept

    shown = cli(stack, "sweeps", "show", sweep["id"])
    assert shown.returncode == 0 and "pruned" in shown.stdout and sweep["id"] in shown.stdout
    listed = json.loads(cli(stack, "sweeps", "list", "-o", "json").stdout)
    assert sweep["id"] in [item["id"] for item in listed["items"]]
    trial_list = cli(stack, "jobs", "list", "--sweep", sweep["id"], "-o", "json")
    assert len(json.loads(trial_list.stdout)["items"]) == 4


def test_cancelling_a_sweep_stops_its_trials(stack, tmp_path):
    spec = tmp_path / "long.json"
    spec.write_text(json.dumps({**SWEEP, "name": "long", "asha": None, "max_trials": 3,
                                "base": {"dataset": {"builtin": "digits"}, "epochs": 10_000, "batch_size": 16,
                                         "checkpoint": {"every_epochs": 50}}}))
    submitted = cli(stack, "sweeps", "submit", str(spec), "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    sweep_id = json.loads(submitted.stdout)["id"]
    cancelled = cli(stack, "sweeps", "cancel", sweep_id, "-o", "json")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    with Client(stack.url) as bp:
        final = bp.wait_sweep(sweep_id, poll_seconds=0.5)
    assert final.status == "cancelled"
    assert final.counts["cancelled"] == 3 and not final.counts["running"] and not final.counts["queued"]
