"""Wake-up hints for live event streams: "job X changed, read it again".

The database is the source of truth for what a stream sends (service.api.streams). Where the
broker is Redis, whoever commits a change a stream shows (the worker: a recorded epoch, a claim,
the end of a job; the API: a cancel) publishes the job id on `backprop:job:<id>` right after the
commit, and API processes holding streams of that job wake up at once. On the embedded broker
there is nothing to publish to, and API processes poll the database instead. A lost hint costs
latency (the API also re-reads every second), never an event.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "backprop:job:"
PUBLISH_TIMEOUT_SECONDS = 0.5  # a hint must never hold up training for long
BACKOFF_SECONDS = 5.0  # after a failed publish, stay quiet this long (Redis is down: so is the broker)


def job_channel(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


def redis_url(broker_url: str) -> str | None:
    """The broker's URL when it is Redis (pub/sub available), else None."""
    return broker_url if broker_url.startswith(("redis://", "rediss://")) else None


class JobEvents:
    """Publishes "job changed" hints; does nothing without Redis. Never raises."""

    def __init__(self, url: str | None, *, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._quiet_until = 0.0
        self._redis = None
        if url is not None:
            import redis

            self._redis = redis.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT_SECONDS,
                                               socket_timeout=PUBLISH_TIMEOUT_SECONDS)

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def changed(self, job_id: str, what: str) -> None:
        """Call after the commit; `what` ("epoch 12", "status", "cancel") is for humans reading Redis."""
        if self._redis is None or self._monotonic() < self._quiet_until:
            return
        try:
            self._redis.publish(job_channel(job_id), what)
        except Exception as error:  # noqa: BLE001 - a hint; streams fall back to reading the database
            self._quiet_until = self._monotonic() + BACKOFF_SECONDS
            log.warning("job %s: could not publish a %r hint (%s); streams catch up by polling", job_id, what, error)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


@lru_cache
def job_events(broker_url: str) -> JobEvents:
    """This process's publisher for a broker URL (redis-py reconnects by itself after a fork)."""
    return JobEvents(redis_url(broker_url))
