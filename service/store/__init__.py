"""Persistence: the Store (datasets, jobs, history, checkpoints) and its migrations."""
from service.store.errors import Conflict, InvalidCursor, LeaseLost, NotFound, StoreError
from service.store.migrate import upgrade
from service.store.store import ClaimedJob, EpochAck, Store

__all__ = ["Store", "ClaimedJob", "EpochAck", "NotFound", "Conflict", "LeaseLost", "InvalidCursor",
           "StoreError", "upgrade"]
