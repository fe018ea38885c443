"""/v1/sweeps: submission (draw, validate, commit, publish the released trials), reads, cancel,
owner isolation, and the trials as ordinary /v1/jobs."""
from __future__ import annotations

import pytest

from service.queue import TRAIN_TASK
from tests.service.store.test_jobs import LEASE

SPACE = {"optimizer.learning_rate": {"loguniform": [1e-4, 0.1]},
         "model.hidden_layers.0.units": {"choice": [32, 64, 128]}}


def sweep_body(**fields) -> dict:
    body = {"name": "lr", "base": {"dataset": {"builtin": "digits"}, "epochs": 6}, "space": SPACE,
            "method": "random", "max_trials": 5, "max_concurrent": 2, "metric": "val_loss", "mode": "min",
            "asha": {"grace_period": 2, "reduction_factor": 3}}
    body.update(fields)
    return body


def submit(api, **fields):
    return api.client.post("/v1/sweeps", json=sweep_body(**fields))


def test_submit_stores_the_sweep_and_publishes_its_first_trials(api):
    response = submit(api)
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{sweep['id']}"
    assert (sweep["status"], sweep["metric"], sweep["mode"]) == ("queued", "val_loss", "min")
    assert sweep["counts"]["queued"] == 2 and sweep["counts"]["held"] == 3
    assert sweep["best"] is None and len(sweep["trials"]) == 5
    for trial in sweep["trials"]:
        assert set(trial) >= {"job_id", "params", "status", "stop_reason", "metric"}
    released = [t["job_id"] for t in sweep["trials"] if t["status"] == "queued"]
    messages = api.published()
    assert sorted(m.task_id for m in messages) == sorted(released)
    assert {m.task for m in messages} == {TRAIN_TASK}
    # trials are ordinary jobs, listable by sweep
    listed = api.client.get("/v1/jobs", params={"sweep_id": sweep["id"]}).json()["items"]
    assert sorted(job["id"] for job in listed) == sorted(released)
    job = api.client.get(f"/v1/jobs/{released[0]}").json()
    assert job["sweep_id"] == sweep["id"] and set(job["trial_params"]) == set(SPACE)
    index = next(t["index"] for t in sweep["trials"] if t["job_id"] == released[0])
    assert job["name"] == f"lr-{index}"  # <sweep name>-<index>, the base spec naming no job
    assert api.client.get(f"/v1/sweeps/{sweep['id']}").json() == sweep


def test_the_same_sweep_spec_draws_the_same_trials(api):
    first = submit(api, seed=11).json()
    second = submit(api, seed=11).json()
    params = lambda sweep: sorted((t["index"], t["params"]["optimizer.learning_rate"]) for t in sweep["trials"])  # noqa: E731
    assert params(first) == params(second)
    assert params(submit(api, seed=12).json()) != params(first)


def test_invalid_sweeps_are_422_naming_the_field_and_store_nothing(api):
    cases = [
        ({"space": {"optimizer.learnig_rate": {"uniform": [0.1, 0.2]}}}, ["body", "space", "optimizer.learnig_rate"], None),
        ({"space": {"optimizer.learning_rate": {"uniform": [0.1, 20.0]}}}, ["body", "space", "optimizer.learning_rate"], 20.0),
        ({"space": {"model.hidden_layers.0.units": {"choice": [64, -1]}}}, ["body", "space", "model.hidden_layers.0.units"], -1),
        ({"space": {"batch_size": {"uniform": [8, 64]}}}, ["body", "space", "batch_size"], None),
        ({"method": "grid"}, ["body", "space", "optimizer.learning_rate"], None),
        ({"metric": "val_r2"}, ["body", "metric"], "val_r2"),
        ({"metric": "val_losss"}, ["body", "metric"], "val_losss"),
        ({"mode": "lowest"}, ["body", "mode"], "lowest"),
        ({"asha": {"grace_period": 0}}, ["body", "asha", "grace_period"], 0),
        ({"max_trials": 0}, ["body", "max_trials"], 0),
        ({"space": {}}, ["body", "space"], None),
    ]
    for fields, loc, value in cases:
        response = submit(api, **fields)
        assert response.status_code == 422, (fields, response.text)
        located = [e for e in response.json()["detail"] if e["loc"] == loc]
        assert located, (fields, response.json()["detail"])
        error = located[0]
        if value is not None:
            assert error["input"] == value, (fields, error)
    assert api.client.get("/v1/sweeps").json()["items"] == []
    assert api.client.get("/v1/jobs").json()["items"] == []
    assert api.published() == []


def test_max_trials_over_the_deployments_cap_is_limit_exceeded(make_api):
    api = make_api(max_trials_per_sweep=3)
    response = submit(api, max_trials=4)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("limit_exceeded", ["body", "max_trials"])
    assert api.client.get("/v1/limits").json()["max_trials_per_sweep"] == 3


def test_cancel_cancels_queued_and_running_trials_and_releases_no_more(api):
    sweep = submit(api).json()
    api.published()
    running = next(t["job_id"] for t in sweep["trials"] if t["status"] == "queued")
    api.store.claim_job(running, "w", LEASE)
    response = api.client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["running"] == 1 and cancelled["counts"]["cancelled"] == 4
    assert api.client.get(f"/v1/jobs/{running}").json()["cancel_requested"] is True
    assert api.store.finish_job(running, "w", status="cancelled", stop_reason="cancelled") == []
    assert api.published() == []


def test_cancelling_a_queued_trial_releases_the_next(api):
    sweep = submit(api, max_concurrent=1).json()
    [first] = [t["job_id"] for t in sweep["trials"] if t["status"] == "queued"]
    api.published()
    assert api.client.post(f"/v1/jobs/{first}/cancel").json()["status"] == "cancelled"
    [message] = api.published()
    after = api.client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert after["counts"] == {"held": 3, "queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert message.task_id == next(t["job_id"] for t in after["trials"] if t["status"] == "queued")


def test_list_sweeps_pages(api):
    ids = [submit(api, max_trials=1, max_concurrent=1).json()["id"] for _ in range(3)]
    first = api.client.get("/v1/sweeps", params={"limit": 2}).json()
    second = api.client.get("/v1/sweeps", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert {s["id"] for s in first["items"] + second["items"]} == set(ids) and second["next_cursor"] is None
    assert api.client.get("/v1/sweeps", params={"cursor": "bogus!"}).status_code == 422


def test_another_owners_sweep_is_404(make_api):
    api = make_api(auth_required=True)
    from service.store import ApiKeys
    keys = ApiKeys(api.store)
    alice = {"Authorization": f"Bearer {keys.create('alice').token}"}
    bob = {"Authorization": f"Bearer {keys.create('bob').token}"}
    assert api.client.post("/v1/sweeps", json=sweep_body()).status_code == 401
    sweep = api.client.post("/v1/sweeps", json=sweep_body(), headers=alice).json()
    assert api.client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).status_code == 200
    assert api.client.get(f"/v1/sweeps/{sweep['id']}", headers=bob).status_code == 404
    assert api.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=bob).status_code == 404
    assert api.client.get("/v1/sweeps", headers=bob).json()["items"] == []
    assert api.client.get("/v1/jobs", params={"sweep_id": sweep["id"]}, headers=bob).json()["items"] == []
    assert api.client.get(f"/v1/sweeps/{sweep['id']}", headers=alice).json()["status"] == "queued"


def test_the_sdk_creates_reads_lists_and_cancels_sweeps(api):
    from service.client import Client, InvalidRequest, NotFound
    from service.specs import SweepSpec

    with Client("http://testserver", transport=api.client._transport) as bp:  # the TestClient's in-process transport
        sweep = bp.create_sweep(SweepSpec.model_validate(sweep_body(max_trials=3)))
        assert bp.get_sweep(sweep.id) == sweep and len(sweep.trials) == 3
        assert [s.id for s in bp.list_sweeps(limit=5).items] == [sweep.id]
        trial_jobs = bp.list_jobs(sweep_id=sweep.id).items
        assert {job.id for job in trial_jobs} == {t.job_id for t in sweep.trials if t.job_id}
        cancelled = bp.cancel_sweep(sweep.id)
        assert cancelled.status == "cancelled"
        assert bp.wait_sweep(sweep.id, sleep=lambda _s: None).counts["cancelled"] == 3
        with pytest.raises(InvalidRequest, match="space.optimizer.learnig_rate"):
            bp.create_sweep({**sweep_body(), "space": {"optimizer.learnig_rate": {"choice": [0.1]}}})
        with pytest.raises(NotFound):
            bp.get_sweep("0" * 32)
