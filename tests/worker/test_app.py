"""The Celery apps' broker settings: the embedded transport (service/broker.py) for sqla+ URLs."""
import sqlite3

from kombu.transport import sqlalchemy as kombu_sqlalchemy

from service.broker import POLL_SECONDS, EmbeddedTransport, broker_options
from service.config import Settings
from service.queue import Enqueuer, celery_client
from worker.app import _prepare_embedded_broker, celery_config


def test_sqla_urls_use_the_embedded_transport_and_others_stay_as_they_are():
    assert broker_options("sqla+sqlite:///data/broker.db") == {
        "broker_url": "sqlite:///data/broker.db", "broker_transport": "service.broker:EmbeddedTransport"}
    assert broker_options("redis://h:6379/0") == {"broker_url": "redis://h:6379/0"}
    settings = Settings(_env_file=None, broker_url="sqla+sqlite:///x.db")
    assert celery_config(settings)["broker_transport"] == "service.broker:EmbeddedTransport"
    assert EmbeddedTransport.polling_interval == POLL_SECONDS < kombu_sqlalchemy.Transport.polling_interval


def test_the_embedded_broker_publishes_into_a_wal_database_the_stock_transport_reads(tmp_path, monkeypatch):
    url = f"sqla+sqlite:///{tmp_path}/nested/broker.db"
    monkeypatch.setenv("BROKER_URL", url)
    from service.config import get_settings
    get_settings.cache_clear()
    try:
        _prepare_embedded_broker()
    finally:
        get_settings.cache_clear()
    assert (tmp_path / "nested").is_dir()
    settings = Settings(_env_file=None, broker_url=url, training_queue="training")
    enqueuer = Enqueuer(celery_client(settings))
    try:
        enqueuer.enqueue("0" * 32)
        with enqueuer._client.connection_for_write() as connection:
            assert type(connection.transport) is EmbeddedTransport
    finally:
        enqueuer.close()
    database = sqlite3.connect(tmp_path / "nested" / "broker.db")
    assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    database.close()
    from tests.utils.broker import take_training_messages  # kombu's own transport, same tables

    assert [message.task_id for message in take_training_messages(url)] == ["0" * 32]
