"""Issue 8 against the real service: `backprop api` and a `backprop worker` process on the embedded
stack, driven through the SDK and the CLI: an autoencoder, a classifier started from its first
layer (frozen), and a cross-validated job, each a few epochs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack

import numpy as np
import pytest

from service.client import Client
from tests.integration.harness import running_stack, wait_for_job
from tests.integration.test_reliability import (
    SLOW_EPOCHS, TERMINAL, assert_same_history, assert_same_model, claims, epochs_of, start_stack,
    wait_for_progress, worker_log,
)
from worker.nn import load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("experiments")
    with running_stack(workdir, f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db") as stack:
        yield stack


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKPROP_URL": stack.url}
    env.pop("BACKPROP_API_KEY", None)
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=stack.workdir,
                          capture_output=True, text=True, timeout=300)


def test_an_autoencoder_a_transfer_from_it_and_a_cross_validated_job(stack, tmp_path):
    with Client(stack.url) as bp:
        autoencoder = bp.submit_job({"dataset": {"builtin": "digits"}, "task": "autoencoder", "epochs": 3,
                                     "model": {"hidden_layers": [{"units": 32}, {"units": 16}, {"units": 32}]}})
        folds = bp.submit_job({"dataset": {"builtin": "iris"}, "epochs": 3, "cross_validation": {"folds": 3},
                               "model": {"hidden_layers": [{"units": 8}]}})
        assert bp.wait(autoencoder.id).status == "succeeded"
        transfer = bp.submit_job({"dataset": {"builtin": "digits"}, "epochs": 2, "freeze": [0],
                                  "model": {"hidden_layers": [{"units": 32}, {"units": 16}]},
                                  "init_from": {"job_id": autoencoder.id, "layers": [0, 1]}})
        assert bp.wait(transfer.id).status == "succeeded"
        cross_validated = bp.wait(folds.id)
        assert cross_validated.status == "succeeded"

        # the autoencoder's encoder, through the SDK; the classifier's frozen layer is its first layer
        encoder = load_model(bp.download_model(autoencoder.id, tmp_path, part="encoder").path)
        assert encoder.task == "encoder" and [layer.units for layer in encoder.network.layers] == [32, 16]
        classifier = load_model(bp.download_model(transfer.id, tmp_path).path)
        frozen, tuned = classifier.network.state_arrays(), encoder.network.state_arrays()
        assert np.array_equal(frozen["layers.0.weight"], tuned["layers.0.weight"])
        assert not np.array_equal(frozen["layers.1.weight"], tuned["layers.1.weight"])
        assert classifier.meta["preprocessing"] == encoder.meta["preprocessing"]  # the source's scaling

        # cross-validation: every fold's epochs, the summary, the refit
        summary = cross_validated.cross_validation
        assert [fold.fold for fold in summary.folds] == [0, 1, 2] and summary.refit_epochs is not None
        assert summary.mean["val_accuracy"] == pytest.approx(np.mean([f.best_metrics["val_accuracy"]
                                                                      for f in summary.folds]))
        history = bp.history(folds.id).epochs
        assert [(row.fold, row.fold_epoch) for row in history] == \
            [(fold, epoch) for fold in range(3) for epoch in (1, 2, 3)] + \
            [(3, epoch) for epoch in range(1, summary.refit_epochs + 1)]
        assert [row.epoch for row in bp.history(folds.id, fold=1).epochs] == [4, 5, 6]
        streamed = [event.data for event in bp.events(folds.id) if event.event == "epoch"]
        assert streamed == history

    shown = cli(stack, "jobs", "history", folds.id, "--fold", "2", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert [row["fold_epoch"] for row in json.loads(shown.stdout)["epochs"]] == [1, 2, 3]
    table = cli(stack, "jobs", "history", folds.id, "--fold", "3")
    assert table.returncode == 0 and "FOLD_EPOCH" in table.stdout
    shown = cli(stack, "jobs", "show", folds.id).stdout
    mean, std = summary.mean["val_accuracy"], summary.std["val_accuracy"]
    assert f"3 folds, val_acc {mean:.4g} ± {std:.4g}, refit {summary.refit_epochs} epochs" in shown
    (tmp_path / "cli").mkdir()
    saved = cli(stack, "jobs", "download", autoencoder.id, "--part", "encoder", "-O", str(tmp_path / "cli"), "-o",
                "json")
    assert saved.returncode == 0, saved.stderr
    path = json.loads(saved.stdout)["path"]
    assert path.endswith(f"encoder-{autoencoder.id}.npz") and load_model(path).task == "encoder"
    refused = cli(stack, "jobs", "download", folds.id, "--part", "encoder")
    assert refused.returncode == 1 and "only an autoencoder job has an encoder part" in refused.stderr
    assert cli(stack, "jobs", "download", autoencoder.id, "--part", "decoder").returncode == 2


@pytest.mark.timeout(180)
def test_a_cross_validated_job_killed_inside_a_fold_ends_as_an_uninterrupted_run(tmp_path):
    """3 folds of 6 epochs, then the refit: the worker is killed (SIGKILL, whole process group) in
    fold 1 (epochs 7-12); the next worker resumes from the latest checkpoint (every 2 epochs)."""
    spec = {"name": "cv-crash", "dataset": {"builtin": "digits"}, "epochs": 6, "seed": 7,
            "cross_validation": {"folds": 3}, "checkpoint": {"every_epochs": 2}, **SLOW_EPOCHS}
    with ExitStack() as resources:
        stack = start_stack("embedded", tmp_path, resources)
        client = resources.enter_context(stack.client())
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        at_kill = wait_for_progress(client, job_id, 9)
        stack.stop("worker0", signal.SIGKILL)
        assert at_kill["status"] == "running", at_kill
        stack.start_worker("worker1")
        done = wait_for_job(client, job_id, TERMINAL, timeout=120, stack=stack)
        assert (done["status"], done["attempt"]) == ("succeeded", 2), done
        [resumed_after] = claims(worker_log(stack, "worker1"), job_id)
        assert 8 <= resumed_after, resumed_after  # inside fold 1 or later, never from scratch

        reference_id = client.post("/v1/jobs", json={**spec, "name": "reference"}).json()["id"]
        reference = wait_for_job(client, reference_id, TERMINAL, timeout=120, stack=stack)
        assert reference["status"] == "succeeded" and reference["attempt"] == 1, reference
        assert done["cross_validation"] == reference["cross_validation"]
        assert_same_history(epochs_of(client, job_id), epochs_of(client, reference_id))
        assert_same_model(client, job_id, reference_id)
