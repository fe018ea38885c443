"""Watching training happen, against the real service: `backprop api` and a `backprop worker`
process, on the embedded defaults and on Redis + PostgreSQL, with API keys required.

- the event stream with a real worker: order, no gaps, no duplicates across a reconnect, `end`;
- the Python SDK, method by method;
- the `backprop jobs|datasets` commands as subprocesses: output, -o json, exit codes, the
  progress bar drawn from the event stream.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from service.client import Client, InvalidRequest, NotFound, Unauthorized
from bench.stack import BIN
from tests.integration.harness import fresh_redis, postgres_database, running_stack

pytestmark = pytest.mark.integration

LONG_JOB = {"name": "long", "dataset": {"builtin": "digits"}, "epochs": 10_000, "batch_size": 16,
            "checkpoint": {"every_epochs": 50}}
DIVERGING_JOB = {"name": "diverges", "dataset": {"builtin": "sine"}, "epochs": 30,
                 "optimizer": {"name": "sgd", "learning_rate": 10.0}}


@pytest.fixture(scope="module", params=["embedded", "redis_postgres"])
def stack(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"live-{request.param}")
    with ExitStack() as resources:
        if request.param == "embedded":
            database_url = f"sqlite:///{workdir}/backprop.db"
            broker_url = f"sqla+sqlite:///{workdir}/broker.db"
        else:
            database_url = resources.enter_context(postgres_database())
            broker_url = fresh_redis()
        yield resources.enter_context(running_stack(workdir, database_url, broker_url,
                                                    extra_env={"AUTH_REQUIRED": "true"}))


@pytest.fixture(scope="module")
def token(stack) -> str:
    created = subprocess.run([str(BIN / "backprop"), "keys", "create", "--owner", "alice"], env=stack.env,
                             cwd=stack.workdir, capture_output=True, text=True, timeout=60, check=True)
    return created.stdout.strip()


@pytest.fixture
def bp(stack, token):
    with Client(stack.url, api_key=token, reconnect_delay=0.2) as client:
        yield client


def cli(stack, token, *args: str, stdin: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKPROP_URL": stack.url, "BACKPROP_API_KEY": token, **(extra_env or {})}
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=stack.workdir, input=stdin,
                          capture_output=True, text=True, timeout=300)


def epoch_ids(events) -> list[int]:
    return [event.id for event in events if event.event == "epoch"]


# ---------------------------------------------------------------- the stream with a real worker


def test_a_training_job_streams_every_epoch_once_across_a_reconnect(bp):
    job = bp.submit_job({"name": "streamed", "dataset": {"builtin": "digits"}, "epochs": 25, "seed": 1})
    first = []
    for event in bp.events(job.id):
        first.append(event)
        if event.event == "epoch" and event.id == 5:
            break  # the client leaves mid-training
    assert first[0].event == "status" and epoch_ids(first) == [1, 2, 3, 4, 5]
    rest = list(bp.events(job.id, last_event_id=5))
    assert epoch_ids(rest) == list(range(6, 26))  # stored ones first, then live: no gap, no duplicate
    assert [event.event for event in rest[-2:]] == ["status", "end"]
    assert rest[-1].data.status == "succeeded" and rest[-1].data.progress.epoch == 25
    history = bp.history(job.id).epochs
    streamed = {event.id: event.data for event in first + rest if event.event == "epoch"}
    assert [streamed[row.epoch] for row in history] == history  # the stream carries the stored rows

    replay = list(bp.events(job.id))  # a finished job replays its history and `end` at once
    assert epoch_ids(replay) == list(range(1, 26)) and replay[-1].event == "end"


def test_cancelling_a_running_job_shows_in_its_stream_and_ends_it(bp):
    job = bp.submit_job(LONG_JOB)
    seen = []
    for event in bp.events(job.id):
        seen.append(event)
        if event.event == "epoch" and event.id == 2:
            bp.cancel_job(job.id)
    statuses = [(e.data.status, e.data.cancel_requested) for e in seen if e.event == "status"]
    # (running, cancel requested) shows when a read falls between the cancel and the worker's stop
    assert statuses[0][0] in ("queued", "running") and statuses[-1] == ("cancelled", True)
    assert seen[-1].event == "end" and seen[-1].data.status == "cancelled"
    assert epoch_ids(seen) == list(range(1, epoch_ids(seen)[-1] + 1))


# ---------------------------------------------------------------- the SDK


def test_the_sdk_covers_every_endpoint(bp, stack, tmp_path):
    assert bp.health() == {"status": "ok"} and bp.ready()["status"] == "ok"
    assert bp.limits().max_epochs == 10_000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 3)).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, X=X, y=(X[:, 0] > 0).astype(int))
    dataset = bp.upload_dataset(path, name="blobs")
    assert (dataset.rows, dataset.features, dataset.classes) == (120, 3, [0, 1])
    assert bp.get_dataset(dataset.id) == dataset
    assert [d.id for d in bp.list_datasets()][-1] == dataset.id and bp.get_dataset("builtin:iris").rows == 150

    job = bp.submit_job({"name": "sdk", "tags": ["sdk"], "dataset": {"id": dataset.id}, "epochs": 6})
    finished = bp.wait(job.id)
    assert finished.status == "succeeded" and bp.get_job(job.id) == finished
    assert [row.epoch for row in bp.history(job.id).epochs] == [1, 2, 3, 4, 5, 6]
    assert [row.epoch for row in bp.history(job.id, points=3).epochs][::2] == [1, 6]
    assert bp.history_csv(job.id).splitlines()[0].startswith("epoch,train_loss,val_loss")
    assert bp.checkpoints(job.id)[-1].epoch == 6
    assert bp.list_jobs(tag="sdk").items == [finished]
    assert any(j.id == job.id for j in bp.iter_jobs(limit=1))
    assert bp.cancel_job(job.id).status == "succeeded"  # a finished job is returned unchanged

    saved = bp.download_model(job.id, tmp_path)
    assert saved.path == tmp_path / f"model-{job.id}.npz" and saved.size_bytes == saved.path.stat().st_size
    assert "meta" in np.load(saved.path, allow_pickle=False).files

    with pytest.raises(NotFound, match="404: job 'nope' not found") as missing:
        bp.get_job("nope")
    assert missing.value.status == 404 and missing.value.message == "job 'nope' not found"
    with pytest.raises(InvalidRequest, match="epochs: Input should be greater than or equal to 1") as invalid:
        bp.submit_job({"dataset": {"builtin": "xor"}, "epochs": 0})
    assert invalid.value.errors[0]["loc"] == ["body", "epochs"]
    with pytest.raises(Unauthorized, match="the API key is not valid"), \
            Client(stack.url, api_key="bpk_0000000000000000_" + "x" * 43) as stranger:
        stranger.list_jobs()


# ---------------------------------------------------------------- the CLI


def test_cli_submit_wait_draws_progress_and_exits_0(stack, token, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli-digits\ndataset:\n  builtin: digits\nepochs: 40\nseed: 3\n")
    done = cli(stack, token, "jobs", "submit", str(spec), "--wait", "-o", "json",
               extra_env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "140"})
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)  # stdout holds the JSON alone
    assert job["status"] == "succeeded" and job["progress"] == {"epoch": 40, "epochs": 40}
    frames = [int(n) for n in re.findall(r"epoch (\d+)/40", done.stderr)]
    assert frames[-1] == 40 and len(set(frames)) > 1, done.stderr  # redrawn as epochs arrived
    assert "train " in done.stderr and "val " in done.stderr and "ETA" in done.stderr


def test_cli_exit_codes_say_failed_and_cancelled(stack, token, bp, tmp_path):
    spec = tmp_path / "diverges.json"
    spec.write_text(json.dumps(DIVERGING_JOB))
    failed = cli(stack, token, "jobs", "submit", str(spec), "--wait")
    assert failed.returncode == 3, failed.stderr
    assert "failed (diverged)" in failed.stdout and "training diverged at epoch" in failed.stdout

    spec = tmp_path / "long.json"
    spec.write_text(json.dumps(LONG_JOB))
    submitted = cli(stack, token, "jobs", "submit", str(spec), "-o", "json")
    job_id = json.loads(submitted.stdout)["id"]

    def cancel_once_running() -> None:
        for event in bp.events(job_id):
            if event.event == "epoch":
                bp.cancel_job(job_id)
                return

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    watched = cli(stack, token, "jobs", "watch", job_id)
    canceller.join(timeout=120)
    assert watched.returncode == 4, watched.stderr
    assert f"job {job_id} cancelled (cancelled)" in watched.stdout


def test_cli_jobs_and_datasets_commands(stack, token, bp, tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n" + "".join(f"{i % 7},{(i * 3) % 5},{'yes' if i % 2 else 'no'}\n" for i in range(40)))
    uploaded = cli(stack, token, "datasets", "upload", str(table), "--name", "tiny", "--target", "label", "-o", "json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert (dataset["name"], dataset["rows"], dataset["classes"]) == ("tiny", 40, ["no", "yes"])
    listed = json.loads(cli(stack, token, "datasets", "list", "-o", "json").stdout)
    assert dataset["id"] in [d["id"] for d in listed]
    assert "builtin:digits" in cli(stack, token, "datasets", "list").stdout

    submitted = cli(stack, token, "jobs", "submit", "-", "-o", "json",
                    stdin=json.dumps({"name": "cli-tiny", "dataset": {"id": dataset["id"]}, "epochs": 4}))
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    assert bp.wait(job_id).status == "succeeded"

    shown = cli(stack, token, "jobs", "show", job_id)
    assert re.search(r"status\s+succeeded", shown.stdout) and re.search(r"progress\s+4/4", shown.stdout)
    assert json.loads(cli(stack, token, "jobs", "show", job_id, "-o", "json").stdout)["id"] == job_id
    jobs = json.loads(cli(stack, token, "jobs", "list", "--name", "cli-tiny", "-o", "json").stdout)
    assert [j["id"] for j in jobs["items"]] == [job_id]
    assert job_id in cli(stack, token, "jobs", "list").stdout

    csv = cli(stack, token, "jobs", "history", job_id, "--csv").stdout.splitlines()
    assert csv[0] == "epoch,train_loss,val_loss,train_accuracy,val_accuracy,val_r2,val_mae,lr,seconds,fold,fold_epoch" and len(csv) == 5
    history = json.loads(cli(stack, token, "jobs", "history", job_id, "-o", "json").stdout)
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3, 4]
    assert re.search(r"^\s*4\s", cli(stack, token, "jobs", "history", job_id).stdout, re.M)

    downloaded = cli(stack, token, "jobs", "download", job_id, "--out", str(tmp_path / "m.npz"), "-o", "json")
    saved = json.loads(downloaded.stdout)
    assert saved["path"] == str(tmp_path / "m.npz") and Path(saved["path"]).stat().st_size == saved["size_bytes"]
    assert "verified" in cli(stack, token, "jobs", "download", job_id, "-O", str(tmp_path)).stdout

    cancelled = cli(stack, token, "jobs", "cancel", job_id, "-o", "json")
    assert json.loads(cancelled.stdout)["status"] == "succeeded"

    missing = cli(stack, token, "jobs", "show", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "error: 404: job 'nope' not found" in missing.stderr
    invalid = cli(stack, token, "jobs", "submit", "-", stdin='{"dataset": {"builtin": "xor"}, "epochs": 0}')
    assert invalid.returncode == 1 and "epochs: Input should be greater than or equal to 1" in invalid.stderr
    keyless = cli(stack, "", "jobs", "list")
    assert keyless.returncode == 1 and "401: an API key is required" in keyless.stderr
    wrong_flag = cli(stack, token, "jobs", "download", job_id, "-o", "model.npz")
    assert wrong_flag.returncode == 2 and "--out/-O PATH" in wrong_flag.stderr
