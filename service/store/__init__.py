"""Persistence: the Store (datasets, jobs, history, checkpoints) and its migrations."""
from service.store.errors import Conflict, InvalidCursor, LeaseLost, NotFound, QueueFull, StoreError
from service.store.migrate import upgrade
from service.store.store import CheckpointPolicy, ClaimedJob, EpochAck, Store
from service.store.keys import ApiKeyPublic, ApiKeys, NewApiKey  # noqa: E402 - needs Store first

__all__ = ["Store", "CheckpointPolicy", "ClaimedJob", "EpochAck", "NotFound", "Conflict", "LeaseLost", "InvalidCursor",
           "QueueFull", "StoreError", "upgrade", "ApiKeys", "ApiKeyPublic", "NewApiKey"]
