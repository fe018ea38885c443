"""GET /v1/jobs/{id}/events over real HTTP (uvicorn in a thread), on SQLite with the embedded
broker (streams poll the database) and on PostgreSQL with Redis (workers publish wake-ups).

The test plays the worker through the real Store and publisher (claim, record_epoch, then the
hint, as worker/training.py does), so it knows exactly which epochs exist when. The same stream
with real worker processes: tests/integration/test_live.py.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httpx
import pytest

from service.client import Client, Event, TooManyRequests, parse_sse, to_event
from service.events import JobEvents, redis_url
from service.main import create_app
from service.queue import Enqueuer, celery_client
from service.store import ApiKeys, Store
from tests.integration.harness import fresh_redis
from tests.utils.factories import create_job, epoch_metrics
from tests.utils.server import free_port, serving

WAIT = 60  # seconds before a test gives up on an event (a hang, not a speed check)


@dataclass
class Live:
    url: str
    store: Store
    events: JobEvents
    make_app: object

    def client(self, token: str | None = None, **options) -> Client:
        return Client(self.url, api_key=token or "", reconnect_delay=0.05, **options)


@pytest.fixture
def make_live(make_store, database_url):
    """`make_live(**settings)`: the API served over HTTP; the broker is Redis on PostgreSQL, embedded on SQLite."""
    resources = ExitStack()

    def make(**overrides) -> Live:
        if database_url.startswith("postgresql"):
            overrides.setdefault("broker_url", fresh_redis())
        overrides.setdefault("stream_keepalive_seconds", 0.5)  # a reader thread blocked on a stream wakes soon
        store = make_store(**overrides)
        enqueuer = Enqueuer(celery_client(store.settings))
        resources.callback(enqueuer.close)
        publisher = JobEvents(redis_url(store.settings.broker_url))
        resources.callback(publisher.close)

        def make_app():
            return create_app(store.settings, store=store, enqueuer=enqueuer)

        url = resources.enter_context(serving(make_app()))
        return Live(url, store, publisher, make_app)

    with resources:
        yield make


@pytest.fixture
def live(make_live) -> Live:
    return make_live()


class Worker:
    """Writes a job's progress as worker/training.py does: commit, then publish the hint."""

    def __init__(self, store: Store, events: JobEvents, job_id: str):
        self.store, self.events, self.job_id = store, events, job_id

    @classmethod
    def of(cls, live: Live, job_id: str) -> "Worker":
        return cls(live.store, live.events, job_id)

    def claim(self) -> None:
        assert self.store.claim_job(self.job_id, "test-worker", 600) is not None
        self.events.changed(self.job_id, "status")

    def epoch(self, epoch: int) -> None:
        self.store.record_epoch(self.job_id, "test-worker", epoch_metrics(epoch), is_best=True, lease_seconds=600)
        self.events.changed(self.job_id, f"epoch {epoch}")

    def finish(self, status: str = "succeeded", stop_reason: str = "completed") -> None:
        self.store.finish_job(self.job_id, "test-worker", status=status, stop_reason=stop_reason)
        self.events.changed(self.job_id, "status")


@contextmanager
def following(client: Client, job_id: str, **kwargs) -> Iterator[queue.Queue]:
    """client.events(job_id) in a thread; events (or the exception that ended it) arrive on the queue."""
    received: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for event in client.events(job_id, **kwargs):
                received.put(event)
        except Exception as error:  # noqa: BLE001 - handed to the test
            received.put(error)
        received.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        client.close()
        thread.join(timeout=WAIT)


def next_event(received: queue.Queue) -> Event:
    item = received.get(timeout=WAIT)
    if isinstance(item, Exception):
        raise item
    assert item is not None, "the stream ended"
    return item


def kinds(events: list[Event]) -> list[str]:
    return [e.event if e.event != "epoch" else f"epoch {e.id}" for e in events]


def raw_lines(url: str, path: str, headers: dict | None = None) -> list[str]:
    """Every line of a stream until the server closes it."""
    with httpx.Client(timeout=WAIT) as http, http.stream("GET", url + path, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(response.iter_lines())


# ---------------------------------------------------------------- replay, follow, end


def test_a_finished_job_replays_its_history_then_end_and_the_server_closes(live):
    job = create_job(live.store)
    worker = Worker.of(live, job.id)
    worker.claim()
    for epoch in range(1, 6):
        worker.epoch(epoch)
    worker.finish()

    lines = raw_lines(live.url, f"/v1/jobs/{job.id}/events")  # returns only because the server closed
    events = [to_event(raw) for raw in parse_sse(lines)]
    assert kinds(events) == ["epoch 1", "epoch 2", "epoch 3", "epoch 4", "epoch 5", "status", "end"]
    assert [e.data.train_loss for e in events[:5]] == [epoch_metrics(n).train_loss for n in range(1, 6)]
    assert events[-1].data.status == "succeeded" and events[-1].data.progress.epoch == 5
    assert "id: 3" in lines and "event: end" in lines
    assert lines[0].startswith(":") and "retry: 1000" in lines  # a first comment announces the retry delay


def test_live_epochs_arrive_in_order_once_then_status_end(live):
    job = create_job(live.store, epochs=8)
    worker = Worker.of(live, job.id)
    with following(live.client(), job.id) as received:
        first = next_event(received)
        assert (first.event, first.data.status) == ("status", "queued")
        worker.claim()
        running = next_event(received)
        assert (running.event, running.data.status, running.data.attempt) == ("status", "running", 1)
        for epoch in range(1, 9):
            worker.epoch(epoch)
            event = next_event(received)  # each epoch arrives while the job runs, before the next exists
            assert (event.event, event.id, event.data.epoch) == ("epoch", epoch, epoch)
        worker.finish()
        assert [(e.event, e.data.status) for e in (next_event(received), next_event(received))] == \
            [("status", "succeeded"), ("end", "succeeded")]
        assert received.get(timeout=WAIT) is None  # the iterator ended after `end`


def test_a_cancel_shows_as_status_changes_and_ends_the_stream(live):
    job = create_job(live.store, epochs=50)
    worker = Worker.of(live, job.id)
    worker.claim()
    worker.epoch(1)
    with following(live.client(), job.id) as received:
        assert [kinds([next_event(received)]) for _ in range(2)] == [["status"], ["epoch 1"]]
        with httpx.Client(base_url=live.url) as http:
            assert http.post(f"/v1/jobs/{job.id}/cancel").status_code == 202  # the API publishes the hint
        requested = next_event(received)
        assert (requested.event, requested.data.status, requested.data.cancel_requested) == ("status", "running", True)
        worker.finish("cancelled", "cancelled")
        assert [(e.event, e.data.status) for e in (next_event(received), next_event(received))] == \
            [("status", "cancelled"), ("end", "cancelled")]


def test_a_long_history_replays_in_pages_without_a_gap(live):
    job = create_job(live.store, epochs=1100)
    worker = Worker.of(live, job.id)
    worker.claim()
    for epoch in range(1, 1101):
        live.store.record_epoch(job.id, "test-worker", epoch_metrics(epoch), is_best=False, lease_seconds=600)
    worker.finish()
    with live.client() as client:
        assert [e.id for e in client.events(job.id) if e.event == "epoch"] == list(range(1, 1101))
        after_a_page = [e.id for e in client.events(job.id, last_event_id=499) if e.event == "epoch"]
    assert after_a_page == list(range(500, 1101))


# ---------------------------------------------------------------- reconnecting


def test_last_event_id_replays_only_later_epochs_then_follows(live):
    job = create_job(live.store, epochs=9)
    worker = Worker.of(live, job.id)
    worker.claim()
    seen: list[int] = []
    with following(live.client(), job.id) as received:
        next_event(received)  # status running
        for epoch in (1, 2, 3):
            worker.epoch(epoch)
            seen.append(next_event(received).id)
    for epoch in (4, 5, 6):  # while disconnected
        worker.epoch(epoch)
    with following(live.client(), job.id, last_event_id=seen[-1]) as received:
        assert next_event(received).event == "status"
        seen += [next_event(received).id for _ in range(3)]  # the stored 4, 5, 6
        for epoch in (7, 8, 9):
            worker.epoch(epoch)
            seen.append(next_event(received).id)
        worker.finish()
        assert [next_event(received).event for _ in range(2)] == ["status", "end"]
    assert seen == list(range(1, 10))  # no gap, no duplicate across the reconnect


def test_the_sdk_reconnects_after_the_api_restarts_without_losing_or_repeating_an_epoch(make_store, database_url):
    """Stop the server mid-stream, record epochs while it is down, start a new app on the same
    port: the SDK reconnects by itself with Last-Event-ID."""
    store = make_store(**({"broker_url": fresh_redis()} if database_url.startswith("postgresql") else {}))
    with ExitStack() as resources:
        publisher = JobEvents(redis_url(store.settings.broker_url))
        resources.callback(publisher.close)
        enqueuer = Enqueuer(celery_client(store.settings))
        resources.callback(enqueuer.close)
        job = create_job(store, epochs=6)
        worker = Worker(store, publisher, job.id)
        worker.claim()
        port = free_port()
        client = Client(f"http://127.0.0.1:{port}", reconnect_delay=0.2, max_reconnects=300)
        seen: list[str] = []
        with serving(create_app(store.settings, store=store, enqueuer=enqueuer), port=port):
            received = resources.enter_context(following(client, job.id))
            seen.append(next_event(received).event)
            for epoch in (1, 2):
                worker.epoch(epoch)
                seen += kinds([next_event(received)])
        worker.epoch(3)  # the API is down: the SDK is retrying
        worker.epoch(4)
        with serving(create_app(store.settings, store=store, enqueuer=enqueuer), port=port):
            seen += kinds([next_event(received) for _ in range(3)])  # status again, then the stored 3 and 4
            for epoch in (5, 6):
                worker.epoch(epoch)
                seen += kinds([next_event(received)])
            worker.finish()
            seen += kinds([next_event(received) for _ in range(2)])
    assert seen == ["status", "epoch 1", "epoch 2", "status", "epoch 3", "epoch 4", "epoch 5", "epoch 6",
                    "status", "end"]


# ---------------------------------------------------------------- auth, isolation, cap, keep-alive


def test_another_owner_gets_404_and_no_key_401(make_live):
    live = make_live(auth_required=True)
    keys = ApiKeys(live.store)
    alice, bob = keys.create("alice").token, keys.create("bob").token
    job = create_job(live.store, owner="alice")
    path = f"/v1/jobs/{job.id}/events"
    with httpx.Client(base_url=live.url, timeout=WAIT) as http:
        assert http.get(path).status_code == 401
        refused = http.get(path, headers={"Authorization": f"Bearer {bob}"})
        assert refused.status_code == 404 and refused.json() == {"detail": f"job '{job.id}' not found"}
        unknown = http.get("/v1/jobs/f00/events", headers={"Authorization": f"Bearer {alice}"})
        assert unknown.status_code == 404
    with following(live.client(alice), job.id) as received:
        assert next_event(received).data.status == "queued"


def test_a_bad_last_event_id_is_a_422_naming_the_header(live):
    job = create_job(live.store)
    with httpx.Client(base_url=live.url, timeout=WAIT) as http:
        answer = http.get(f"/v1/jobs/{job.id}/events", headers={"Last-Event-ID": "three"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["header", "last-event-id"]


class OpenStream:
    """A stream held open (its first line read: the server has taken the slot) until close()."""

    def __init__(self, http: httpx.Client, path: str, token: str):
        self._context = http.stream("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.response = self._context.__enter__()
        self.status_code = self.response.status_code
        if self.status_code == 200:
            self.lines = self.response.iter_lines()  # kept: dropping the iterator closes the connection
            next(self.lines)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def test_open_streams_are_capped_per_owner_and_a_closed_one_frees_its_slot(make_live):
    live = make_live(auth_required=True, max_streams_per_owner=2, stream_keepalive_seconds=0.2)
    keys = ApiKeys(live.store)
    alice, bob = keys.create("alice").token, keys.create("bob").token
    alices, bobs = create_job(live.store, owner="alice"), create_job(live.store, owner="bob")
    path = f"/v1/jobs/{alices.id}/events"
    with httpx.Client(base_url=live.url, timeout=WAIT) as http:
        opened = [OpenStream(http, path, alice) for _ in range(2)]
        assert [stream.status_code for stream in opened] == [200, 200]
        third = http.get(path, headers={"Authorization": f"Bearer {alice}"})
        assert third.status_code == 429 and "MAX_STREAMS_PER_OWNER" in third.json()["detail"]
        with pytest.raises(TooManyRequests, match="2 open event streams"):
            next(live.client(alice).events(alices.id))
        bobs_stream = OpenStream(http, f"/v1/jobs/{bobs.id}/events", bob)
        assert bobs_stream.status_code == 200  # the cap is per owner
        bobs_stream.close()

        opened.pop().close()  # the client leaves; the server notices and gives the slot back
        for _ in range(WAIT * 10):
            again = OpenStream(http, path, alice)
            again.close()
            if again.status_code == 200:
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the slot of the closed stream was never given back")
        for stream in opened:
            stream.close()


def test_an_idle_stream_sends_keep_alive_comments(make_live):
    live = make_live(stream_keepalive_seconds=0.1)
    job = create_job(live.store)
    with httpx.Client(base_url=live.url, timeout=WAIT) as http, \
            http.stream("GET", f"/v1/jobs/{job.id}/events") as response:
        lines = response.iter_lines()
        keep_alives = 0
        while keep_alives < 3:
            line = next(lines)
            keep_alives += line == ": keep-alive"
            assert not line.startswith("event: epoch")
