"""Read what the API really published: messages waiting on the training queue of a broker."""
from __future__ import annotations

from dataclasses import dataclass

from kombu import Connection

from service.queue import TRAINING_QUEUE


@dataclass(frozen=True)
class TaskMessage:
    task_id: str
    task: str
    args: list


def take_training_messages(broker_url: str) -> list[TaskMessage]:
    """Consume every message waiting on the `training` queue, in order."""
    messages = []
    with Connection(broker_url) as connection:
        queue = connection.SimpleQueue(TRAINING_QUEUE)
        try:
            while True:
                try:
                    message = queue.get(block=False)
                except queue.Empty:
                    break
                args, _kwargs, _embed = message.decode()  # Celery message protocol 2
                messages.append(TaskMessage(message.headers["id"], message.headers["task"], list(args)))
                message.ack()
        finally:
            queue.close()
    return messages
