"""The worker's Celery app: settings that change how it talks to the broker."""
from types import SimpleNamespace

from kombu.transport import sqlalchemy as sqlalchemy_transport

from worker.app import EMBEDDED_BROKER_POLL_SECONDS, _prepare_embedded_broker


def test_embedded_broker_is_polled_faster_than_kombus_default_and_its_folder_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlalchemy_transport.Transport, "polling_interval", 1.0)
    url = f"sqla+sqlite:///{tmp_path}/nested/broker.db"
    _prepare_embedded_broker(sender=SimpleNamespace(app=SimpleNamespace(conf=SimpleNamespace(broker_url=url))))
    assert sqlalchemy_transport.Transport.polling_interval == EMBEDDED_BROKER_POLL_SECONDS < 1.0
    assert (tmp_path / "nested").is_dir()


def test_redis_broker_leaves_the_sqlalchemy_transport_alone(monkeypatch):
    monkeypatch.setattr(sqlalchemy_transport.Transport, "polling_interval", 1.0)
    _prepare_embedded_broker(sender=SimpleNamespace(app=SimpleNamespace(conf=SimpleNamespace(broker_url="redis://h:6379/0"))))
    assert sqlalchemy_transport.Transport.polling_interval == 1.0
