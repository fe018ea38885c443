"""The enqueuer: send_later publishes on its own thread, in the order ids were handed over."""
from __future__ import annotations

import logging

from service.queue import TRAIN_TASK, Enqueuer, celery_client
from tests.utils.broker import take_training_messages


def test_send_later_publishes_in_order_and_flush_waits_for_it(settings_factory):
    settings = settings_factory()
    enqueuer = Enqueuer(celery_client(settings))
    ids = [f"{i:032x}" for i in range(40)]
    try:
        for job_id in ids:
            enqueuer.send_later(job_id)
        enqueuer.flush()
        messages = take_training_messages(settings.broker_url)
    finally:
        enqueuer.close()
    assert [m.task_id for m in messages] == ids and {m.task for m in messages} == {TRAIN_TASK}


def test_a_failed_publish_is_logged_and_the_next_ones_still_go_out(settings_factory, caplog):
    settings = settings_factory()

    class Flaky(Enqueuer):
        def enqueue(self, job_id: str) -> None:
            if job_id == "b" * 32:
                raise ConnectionError("broker down")
            super().enqueue(job_id)

    enqueuer = Flaky(celery_client(settings))
    with caplog.at_level(logging.ERROR, logger="service.queue"):
        for job_id in ("a" * 32, "b" * 32, "c" * 32):
            enqueuer.send_later(job_id)
        enqueuer.close()  # flushes before it stops
    assert [m.task_id for m in take_training_messages(settings.broker_url)] == ["a" * 32, "c" * 32]
    assert f"job {'b' * 32} is stored but could not be enqueued" in caplog.text
