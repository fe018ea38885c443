"""Live event streams of jobs, one API process's side: what `GET /v1/jobs/{id}/events` sends.

The database is the source of truth. A stream reads the job, then the stored epochs after the
last one it sent, sends what is new, and waits for a wake-up; every wake-up repeats the read, so
an epoch is sent exactly once whatever woke the stream, and none is missed between the replay
and the follow (the stream is registered for wake-ups before its first read).

Wake-ups come from one `JobWatch` per process, shared by all its streams:
- where the broker is Redis, one pub/sub connection subscribed to the channels of the jobs being
  streamed (service.events: workers publish after each commit), plus a database check every
  second in case a hint was lost (Redis restarted, a publish failed);
- otherwise (the embedded broker) the database check alone, every STREAM_POLL_SECONDS: one
  query for all the jobs this process streams, waking the streams whose job changed.

The job is read before its epochs: a job read as finished had committed all its epochs, so the
read that follows sees them and `end` never overtakes an epoch.

Streams of the same job share reads: every wake-up of a job bumps its version, and a stream woken
at version v may use a read that started at version v or later (it holds every change whose
wake-up came before; a later change wakes the stream again). One read per job per change, not
one per stream.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial

import anyio.to_thread
from fastapi.sse import ServerSentEvent

from service.config import Settings
from service.events import job_channel, redis_url
from service.specs import TERMINAL_STATUSES, EpochMetrics, JobPublic
from service.store import Store
from service.store.events import epochs_after, job_signatures

log = logging.getLogger(__name__)

REDIS_SAFETY_POLL_SECONDS = 1.0  # with pub/sub, the database is still checked this often
SUBSCRIBE_WAIT_SECONDS = 2.0  # how long a new stream waits for Redis to confirm its subscription
REPLAY_PAGE = 500  # epochs read per query while replaying a long history
RETRY_MILLISECONDS = 1000  # the `retry:` a stream announces: EventSource reconnects after 1 s
IDLE_CHANNEL = "backprop:streams"  # keeps the pub/sub connection subscribed while no job is watched


class TooManyStreams(Exception):
    def __init__(self, owner: str | None, limit: int):
        who = "this API" if owner is None else f"owner {owner!r}"
        super().__init__(f"{who} already has {limit} open event streams on this API process, the cap "
                         "(MAX_STREAMS_PER_OWNER); close one first")


class StreamSlots:
    """Open streams per owner in this process; at most `limit` each."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: Counter[str | None] = Counter()

    def acquire(self, owner: str | None) -> None:
        if self._open[owner] >= self.limit:
            raise TooManyStreams(owner, self.limit)
        self._open[owner] += 1

    def release(self, owner: str | None) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]

    def open(self, owner: str | None) -> int:
        return self._open[owner]

    def total(self) -> int:
        return sum(self._open.values())


class JobWatch:
    """Wakes the streams of a job when it may have changed (see the module's docstring)."""

    def __init__(self, store: Store, *, poll_seconds: float, redis: str | None = None):
        self._store = store
        self._redis_url = redis
        self._poll_seconds = REDIS_SAFETY_POLL_SECONDS if redis else poll_seconds
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._versions: dict[str, int] = {}  # job id -> wake-ups so far (while watched)
        self._seen: dict[str, tuple | None] = {}
        self._confirmed: dict[str, asyncio.Event] = {}  # job id -> set once Redis confirms the subscription
        self._pubsub = None
        self._tasks: list[asyncio.Task] = []

    @property
    def uses_redis(self) -> bool:
        return self._redis_url is not None

    def watched(self) -> int:
        return len(self._waiters)

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll(), name="job-watch-poll"))
        if self._redis_url:
            self._tasks.append(asyncio.create_task(self._listen(), name="job-watch-redis"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    @asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the job may have changed; registered (and, on Redis, subscribed) on entry."""
        event = asyncio.Event()
        first = job_id not in self._waiters
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            if self._redis_url:
                if first:
                    self._confirmed[job_id] = asyncio.Event()
                    await self._subscribe(job_id)
                with suppress(TimeoutError):  # unconfirmed: the safety poll covers the gap
                    await asyncio.wait_for(self._confirmed[job_id].wait(), SUBSCRIBE_WAIT_SECONDS)
            yield event
        finally:
            waiters = self._waiters.get(job_id, set())
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(job_id, None)
                self._versions.pop(job_id, None)
                self._seen.pop(job_id, None)
                self._confirmed.pop(job_id, None)
                if self._redis_url:
                    await self._unsubscribe(job_id)

    def _wake(self, job_id: str) -> None:
        if job_id in self._waiters:
            self._versions[job_id] = self._versions.get(job_id, 0) + 1
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            job_ids = list(self._waiters)
            if not job_ids:
                continue
            try:
                signatures = await anyio.to_thread.run_sync(job_signatures, self._store, job_ids)
            except Exception as error:  # noqa: BLE001 - the database may come back; streams wait meanwhile
                log.warning("event streams: checking %d jobs failed: %s", len(job_ids), error)
                continue
            for job_id in job_ids:
                signature = signatures.get(job_id)
                if job_id not in self._seen or self._seen[job_id] != signature:
                    self._seen[job_id] = signature
                    self._wake(job_id)

    # ------------------------------------------------------------ Redis pub/sub

    async def _subscribe(self, job_id: str) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.subscribe(job_channel(job_id))
            except Exception as error:  # noqa: BLE001 - _listen reconnects and subscribes again
                log.warning("event streams: subscribing to job %s failed: %s", job_id, error)

    async def _unsubscribe(self, job_id: str) -> None:
        if self._pubsub is not None:
            with suppress(Exception):
                await self._pubsub.unsubscribe(job_channel(job_id))

    async def _listen(self) -> None:
        import redis.asyncio

        while True:
            client = redis.asyncio.Redis.from_url(self._redis_url, socket_connect_timeout=3, health_check_interval=30)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(IDLE_CHANNEL, *(job_channel(job_id) for job_id in self._waiters))
                self._pubsub = pubsub
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    if not channel.startswith("backprop:job:"):
                        continue
                    job_id = channel.removeprefix("backprop:job:")
                    if message["type"] == "message":
                        self._wake(job_id)
                    elif message["type"] == "subscribe" and job_id in self._confirmed:
                        self._confirmed[job_id].set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect; the safety poll keeps streams going
                log.warning("event streams: Redis pub/sub lost (%s); reconnecting in 1 s", error)
                for job_id in list(self._waiters):
                    self._wake(job_id)
                await asyncio.sleep(1.0)
            finally:
                self._pubsub = None
                with suppress(Exception):
                    await pubsub.aclose()
                with suppress(Exception):
                    await client.aclose()


@dataclass(frozen=True)
class Snapshot:
    """One read of a job and its epochs after `after`, started at wake-up `version`."""

    version: int
    job: JobPublic
    after: int
    epochs: list[EpochMetrics]

    @property
    def complete(self) -> bool:  # every stored epoch after `after` is in `epochs`
        return len(self.epochs) < REPLAY_PAGE

    def serves(self, after: int, version: int) -> bool:
        if self.version < version or self.after > after:
            return False
        return self.complete or after < self.epochs[-1].epoch


class JobStreams:
    """This process's event streams: the shared watch, the per-owner cap, and what a stream sends."""

    def __init__(self, store: Store, settings: Settings):
        self._store = store
        self.keepalive_seconds = settings.stream_keepalive_seconds
        self.slots = StreamSlots(settings.max_streams_per_owner)
        self.watch = JobWatch(store, poll_seconds=settings.stream_poll_seconds, redis=redis_url(settings.broker_url))
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._streams: Counter[str] = Counter()  # open streams per job, to forget a job's snapshot

    async def _read(self, job_id: str, after: int, version: int) -> tuple[JobPublic, list[EpochMetrics], bool]:
        """(job, epochs after `after`, whether more are stored) as of wake-up `version` or later."""
        snapshot = self._snapshots.get(job_id)
        if snapshot is None or not snapshot.serves(after, version):
            async with self._locks.setdefault(job_id, asyncio.Lock()):
                snapshot = self._snapshots.get(job_id)
                if snapshot is None or not snapshot.serves(after, version):  # nobody read it meanwhile
                    started = self.watch.version(job_id)
                    job = await anyio.to_thread.run_sync(self._store.get_job, job_id)
                    epochs = await anyio.to_thread.run_sync(
                        partial(epochs_after, self._store, job_id, after, REPLAY_PAGE))
                    snapshot = self._snapshots[job_id] = Snapshot(started, job, after, epochs)
        epochs = [epoch for epoch in snapshot.epochs if epoch.epoch > after]
        return snapshot.job, epochs, not snapshot.complete

    async def start(self) -> None:
        await self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()

    async def follow(self, job_id: str, *, after: int = 0) -> AsyncIterator[ServerSentEvent]:
        """`status` on each change, `epoch` (id = its number) for each epoch above `after`, then `end`."""
        yield ServerSentEvent(comment=f"events of job {job_id}", retry=RETRY_MILLISECONDS)
        sent, shown = after, None
        self._streams[job_id] += 1
        try:
            async with self.watch.watch(job_id) as changed:
                while True:
                    changed.clear()  # before reading: a change committed during the read wakes us again
                    job, epochs, more = await self._read(job_id, sent, self.watch.version(job_id))
                    finished = job.status in TERMINAL_STATUSES
                    signature = (job.status, job.cancel_requested, job.attempt)
                    if signature != shown and not finished:
                        shown = signature
                        yield ServerSentEvent(event="status", data=job)
                    for epoch in epochs:
                        yield ServerSentEvent(event="epoch", id=str(epoch.epoch), data=epoch)
                        sent = epoch.epoch
                    if more:
                        continue  # more stored epochs to replay
                    if finished:
                        if signature != shown:
                            yield ServerSentEvent(event="status", data=job)
                        yield ServerSentEvent(event="end", data=job)
                        return
                    try:
                        await asyncio.wait_for(changed.wait(), self.keepalive_seconds)
                    except TimeoutError:
                        yield ServerSentEvent(comment="keep-alive")
        except Exception as error:  # noqa: BLE001 - close without `end`: the client reconnects with Last-Event-ID
            log.warning("event stream of job %s closed early after epoch %d: %s", job_id, sent, error)
        finally:
            self._streams[job_id] -= 1
            if self._streams[job_id] <= 0:
                del self._streams[job_id]
                self._snapshots.pop(job_id, None)
                self._locks.pop(job_id, None)
