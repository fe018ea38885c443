"""GET /v1/jobs/{id}/history?points=N: a long history cut down for a chart, on the server."""
from __future__ import annotations

import pytest

from service.api.downsample import downsample
from service.api.jobs import HISTORY_COLUMNS
from tests.utils.factories import create_job, epoch_metrics

SPIKE, DIP = 137, 71


@pytest.fixture
def long_job(api):
    """500 recorded epochs; val_loss spikes at SPIKE and dips to its minimum at DIP."""
    job = create_job(api.store, epochs=500)
    assert api.store.claim_job(job.id, "w", 60) is not None
    for epoch in range(1, 501):
        val_loss = 9.0 if epoch == SPIKE else 0.001 if epoch == DIP else 0.5 + (epoch % 7) / 100
        api.store.record_epoch(job.id, "w", epoch_metrics(epoch, val_loss=val_loss), is_best=epoch == DIP,
                               lease_seconds=60)
    return job


def test_points_keeps_the_ends_and_the_extremes_of_real_rows(api, long_job):
    full = api.client.get(f"/v1/jobs/{long_job.id}/history").json()["epochs"]
    cut = api.client.get(f"/v1/jobs/{long_job.id}/history", params={"points": 40}).json()["epochs"]
    epochs = [row["epoch"] for row in cut]
    assert len(cut) <= 40 and epochs == sorted(set(epochs))
    assert epochs[0] == 1 and epochs[-1] == 500
    assert SPIKE in epochs and DIP in epochs
    assert all(row == full[row["epoch"] - 1] for row in cut)  # rows as stored, never averaged
    assert len(cut) >= 30  # the buckets are used, not just the ends


def test_points_above_the_length_changes_nothing_and_applies_to_csv(api, long_job):
    path = f"/v1/jobs/{long_job.id}/history"
    assert api.client.get(path, params={"points": 500}).json() == api.client.get(path).json()
    csv = api.client.get(path, params={"points": 10, "format": "csv"}).text.splitlines()
    assert csv[0].startswith("epoch,") and 2 < len(csv) - 1 <= 10


@pytest.mark.parametrize("points", ["1", "10001", "many"])
def test_points_out_of_range_is_422(api, long_job, points):
    answer = api.client.get(f"/v1/jobs/{long_job.id}/history", params={"points": points})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "points"]


def test_without_validation_the_train_loss_decides():
    rows = [(e, 1.0 / e if e != 50 else 7.0, None, None, None, None, None, 0.1, 0.01) for e in range(1, 101)]
    kept = downsample(rows, 10, HISTORY_COLUMNS)
    assert [row[0] for row in kept][0] == 1 and kept[-1][0] == 100 and any(row[0] == 50 for row in kept)
    assert len(kept) <= 10
