"""API keys and isolation: with auth on, /v1 needs a live key, and each owner sees only their own
datasets, jobs, histories, checkpoints and models (another owner's answer 404, as unknown ids do)."""
from __future__ import annotations

import asyncio
import hashlib
import io

import numpy as np
import pytest

from service.store import ApiKeys
from tests.utils.api import job_body
from tests.utils.factories import epoch_metrics, read_object, store_checkpoint, store_model
from tests.utils.uploads import classification_arrays, npz_bytes

WORKER = "test-worker"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_api):
    """(api with AUTH_REQUIRED=true, its ApiKeys, alice's token, bob's token)."""
    api = make_api(auth_required=True)
    keys = ApiKeys(api.store)
    return api, keys, keys.create("alice").token, keys.create("bob").token


def v1_requests(job_id: str = "0" * 32, dataset_id: str = "0" * 32) -> list[tuple[str, str, dict]]:
    upload = {"files": {"file": ("d.npz", npz_bytes(**classification_arrays()))}}
    return [
        ("GET", "/v1/datasets", {}), ("POST", "/v1/datasets", upload), ("GET", f"/v1/datasets/{dataset_id}", {}),
        ("GET", "/v1/jobs", {}), ("POST", "/v1/jobs", {"json": job_body()}), ("GET", f"/v1/jobs/{job_id}", {}),
        ("GET", f"/v1/jobs/{job_id}/history", {}), ("POST", f"/v1/jobs/{job_id}/cancel", {}),
        ("GET", f"/v1/jobs/{job_id}/model", {}), ("GET", f"/v1/jobs/{job_id}/checkpoints", {}),
        ("GET", f"/v1/jobs/{job_id}/model?format=onnx", {}),
        ("POST", f"/v1/jobs/{job_id}/predict", {"json": {"inputs": [[1.0, 2.0]]}}),
        ("GET", "/v1/limits", {}), ("GET", "/v1/no-such-route", {}),
    ]


def stored_job_ids(api) -> list[str]:
    return [job.id for job in api.store.list_jobs(limit=1000).items]


# ---------------------------------------------------------------- 401


@pytest.mark.parametrize("method, path, kwargs", v1_requests(), ids=lambda value: value if isinstance(value, str) else "")
def test_no_key_401_with_a_bearer_challenge(secured, method, path, kwargs):
    api, *_ = secured
    response = api.client.request(method, path, **kwargs)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "backprop keys create" in response.json()["detail"]
    assert stored_job_ids(api) == [] and api.published() == [] and api.stored_dataset_files() == []


def test_bad_keys_401_invalid_token(secured):
    api, keys, alice, _ = secured
    key_id = alice.split("_")[1]
    wrong_secret = f"bpk_{key_id}_{'A' * 43}"
    unknown_id = f"bpk_{'0' * 16}_{alice.split('_', 2)[2]}"
    for header in (f"Bearer {wrong_secret}", f"Bearer {unknown_id}", "Bearer nonsense", f"Bearer {alice}x",
                   f"Bearer {alice[:-1]}"):
        response = api.client.get("/v1/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == 'Bearer realm="backprop", error="invalid_token"'
    for header in (f"Basic {alice}", alice, "Bearer "):  # not a bearer credential at all
        response = api.client.get("/v1/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == 'Bearer realm="backprop"'
    assert api.client.get("/v1/jobs", headers=bearer(alice)).status_code == 200


def test_revoked_key_401_from_the_next_request(secured):
    api, keys, alice, bob = secured
    assert api.client.get("/v1/jobs", headers=bearer(alice)).status_code == 200
    keys.revoke(alice.split("_")[1])
    response = api.client.get("/v1/jobs", headers=bearer(alice))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert api.client.get("/v1/jobs", headers=bearer(bob)).status_code == 200


def test_health_and_schema_stay_open(secured):
    api, *_ = secured
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["ApiKey"]["description"]}
    assert schema["paths"]["/v1/jobs"]["post"]["security"] == [{"ApiKey": []}]
    assert "401" in schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(secured):
    api, *_ = secured
    chunk = b"\0" * 65536
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}  # 'endless'

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/datasets", "raw_path": b"/v1/datasets", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=x")], "server": ("testserver", 80),
             "client": ("testclient", 1)}
    asyncio.run(asyncio.wait_for(api.client.app(scope, receive, send), timeout=30))
    assert (sent[0]["status"], read) == (401, 0)


# ---------------------------------------------------------------- isolation


def alice_owns_everything(api, alice: str) -> dict[str, str]:
    """Alice's dataset, and a finished job on it with history, checkpoints and a model."""
    dataset = api.client.post("/v1/datasets", headers=bearer(alice),
                              files={"file": ("mine.npz", npz_bytes(**classification_arrays()))}).json()
    job = api.client.post("/v1/jobs", headers=bearer(alice), json={"dataset": {"id": dataset["id"]}, "epochs": 2})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    assert api.store.claim_job(job_id, WORKER, lease_seconds=60) is not None
    for epoch in (1, 2):
        checkpoint = store_checkpoint(api.store, job_id, epoch)
        api.store.record_epoch(job_id, WORKER, epoch_metrics(epoch), is_best=True, checkpoint=checkpoint,
                               lease_seconds=60)
    model = store_model(api.store, job_id, npz_bytes(w=np.ones(2, np.float32)))
    api.store.finish_job(job_id, WORKER, status="succeeded", stop_reason="completed", best_epoch=2, model=model)
    return {"dataset": dataset["id"], "job": job_id}


def test_another_owner_gets_404_for_each_of_alices_resources(secured):
    api, _, alice, bob = secured
    owned = alice_owns_everything(api, alice)
    dataset_id, job_id = owned["dataset"], owned["job"]
    reads = [f"/v1/datasets/{dataset_id}", f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/history",
             f"/v1/jobs/{job_id}/history?format=csv", f"/v1/jobs/{job_id}/checkpoints", f"/v1/jobs/{job_id}/model"]

    for path in reads:
        assert api.client.get(path, headers=bearer(alice)).status_code == 200, path
        response = api.client.get(path, headers=bearer(bob))
        assert response.status_code == 404, path
        # indistinguishable from an id that does not exist
        kind = "dataset" if "datasets" in path else "job"
        ident = dataset_id if kind == "dataset" else job_id
        assert response.json() == {"detail": f"{kind} {ident!r} not found"}

    assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(bob)).status_code == 404
    theirs = api.client.post("/v1/jobs", headers=bearer(bob), json={"dataset": {"id": dataset_id}, "epochs": 1})
    assert theirs.status_code == 404
    assert stored_job_ids(api) == [job_id]

    # listings: bob sees the built-ins and nothing of alice's, whatever the filter
    assert all(item["source"] == "builtin" for item in api.client.get("/v1/datasets", headers=bearer(bob)).json())
    for params in ({}, {"dataset": dataset_id}, {"status": "succeeded"}):
        assert api.client.get("/v1/jobs", params=params, headers=bearer(bob)).json()["items"] == []
    assert [job["id"] for job in api.client.get("/v1/jobs", headers=bearer(alice)).json()["items"]] == [job_id]
    assert [d["id"] for d in api.client.get("/v1/datasets", headers=bearer(alice)).json()][-1] == dataset_id

    # and the job is untouched by bob's attempts
    assert api.client.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).json()["cancel_requested"] is False


def test_a_running_job_cannot_be_cancelled_by_another_owner(secured):
    api, _, alice, bob = secured
    job_id = api.client.post("/v1/jobs", headers=bearer(alice), json=job_body()).json()["id"]
    assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(bob)).status_code == 404
    assert api.store.get_job(job_id).status == "queued"


def test_jobs_and_datasets_are_stored_with_their_owner(secured):
    api, _, alice, bob = secured
    owned = alice_owns_everything(api, alice)
    assert api.store.get_job(owned["job"], owner="alice").id == owned["job"]
    assert api.store.get_dataset(owned["dataset"], owner="alice").id == owned["dataset"]
    bobs = api.client.post("/v1/jobs", headers=bearer(bob), json=job_body()).json()
    assert [job.id for job in api.store.list_jobs(owner="bob").items] == [bobs["id"]]


def test_the_queue_cap_is_per_owner(make_api):
    api = make_api(auth_required=True, max_queued_jobs_per_owner=1)
    keys = ApiKeys(api.store)
    alice, bob = keys.create("alice").token, keys.create("bob").token
    assert api.client.post("/v1/jobs", headers=bearer(alice), json=job_body()).status_code == 202
    assert api.client.post("/v1/jobs", headers=bearer(alice), json=job_body()).status_code == 429
    assert api.client.post("/v1/jobs", headers=bearer(bob), json=job_body()).status_code == 202
    assert len(stored_job_ids(api)) == 2 and len(api.published()) == 2


def test_model_bytes_reach_their_owner(secured):
    api, _, alice, _ = secured
    owned = alice_owns_everything(api, alice)
    response = api.client.get(f"/v1/jobs/{owned['job']}/model", headers=bearer(alice))
    with np.load(io.BytesIO(response.content), allow_pickle=False) as model:
        assert model["w"].tolist() == [1.0, 1.0]
