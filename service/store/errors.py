"""Errors the store raises; the API maps NotFound to 404 and Conflict to 409."""
from __future__ import annotations


class StoreError(Exception):
    pass


class NotFound(StoreError):
    def __init__(self, kind: str, ident: str):
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(StoreError):
    """The request is valid but the resource is not in a state that allows it."""


class InvalidCursor(StoreError, ValueError):
    """A list cursor that this store did not issue, or issued for another ordering."""


class LeaseLost(StoreError):
    """The worker no longer holds the job: another delivery claimed it, or it was finished."""


class QueueFull(StoreError):
    """The owner already has the most queued jobs allowed (Settings.max_queued_jobs_per_owner)."""

    def __init__(self, owner: str | None, limit: int):
        who = "this API" if owner is None else f"owner {owner!r}"
        super().__init__(f"{who} already has {limit} queued jobs, the cap (MAX_QUEUED_JOBS_PER_OWNER); "
                         "submit again once some have started")
        self.owner = owner
        self.limit = limit
