"""Persistence: the Store (datasets, jobs, history, checkpoints), the artifact store and migrations."""
from service.store.artifacts import ArtifactError, ArtifactStore, StoredObject
from service.store.errors import Conflict, InvalidCursor, LeaseLost, NotFound, QueueFull, StoreError
from service.store.migrate import upgrade
from service.store.store import CheckpointPolicy, ClaimedJob, EpochAck, Store
from service.store.keys import ApiKeyPublic, ApiKeys, NewApiKey  # noqa: E402 - needs Store first

__all__ = ["Store", "CheckpointPolicy", "ClaimedJob", "EpochAck", "NotFound", "Conflict", "LeaseLost",
           "InvalidCursor", "QueueFull", "StoreError", "upgrade", "ApiKeys", "ApiKeyPublic", "NewApiKey",
           "ArtifactStore", "ArtifactError", "StoredObject"]
