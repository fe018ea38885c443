"""The embedded broker: Celery's SQLAlchemy transport on a SQLite file, tuned for this service.

`BROKER_URL=sqla+sqlite:///./data/broker.db` (the default) selects it. Two changes to kombu's
transport, made in a subclass rather than by patching kombu:
- its database runs in WAL mode with synchronous=NORMAL and a busy timeout, as the results
  database does: a publish commits without an fsync and never fails on a busy file (a power loss
  may drop the last messages; the database stays the source of truth and the reconciler re-sends
  queued jobs whose message is gone);
- workers poll it every 0.2 s instead of kombu's 1 s: with prefetch 1 and late acks a worker asks
  for its next message only after a poll, so the interval bounds how fast jobs start;
- a publish is one Core INSERT with the queue's id looked up once per channel (kombu's ORM path
  queries the queue and flushes a unit of work per message: most of a job submission's CPU).
"""
from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqlalchemy
from kombu.utils.json import dumps
from sqlalchemy import event, insert
from sqlalchemy.exc import OperationalError

from service.store.db import SQLITE_BUSY_TIMEOUT_MS

SCHEME = "sqla+"
TRANSPORT = "service.broker:EmbeddedTransport"
POLL_SECONDS = 0.2


class EmbeddedChannel(kombu_sqlalchemy.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._queue_ids: dict[str, int] = {}  # kombu never deletes a queue row

    def _put(self, queue, payload, **kwargs):
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = self._queue_ids[queue] = self._get_or_create(queue).id
        try:
            self.session.execute(insert(self.message_cls.__table__).values(payload=dumps(payload), queue_id=queue_id))
            self.session.commit()
        except OperationalError:  # as kombu's: the publish fails (and may be retried), never half-stored
            self.session.rollback()
            raise

    def _engine_from_config(self):
        engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":
            @event.listens_for(engine, "connect")
            def _tune(dbapi_connection, _record) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cursor.close()
        return engine


class EmbeddedTransport(kombu_sqlalchemy.Transport):
    Channel = EmbeddedChannel
    polling_interval = POLL_SECONDS


def broker_options(broker_url: str) -> dict[str, str]:
    """Celery settings for BROKER_URL: the embedded transport for `sqla+...` URLs, else the URL as is."""
    if broker_url.startswith(SCHEME):
        # kombu takes the transport from a `sqla+` prefix over any other choice; without the
        # prefix, Celery's broker_transport picks ours and the rest is the SQLAlchemy URL
        return {"broker_url": broker_url.removeprefix(SCHEME), "broker_transport": TRANSPORT}
    return {"broker_url": broker_url}
