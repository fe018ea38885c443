"""Orphaned artifacts: objects no row names.

A write is committed in the database only after its object is complete, so a crash between the
two leaves an object without a row (or a local temp file of a write in progress): harmless, but
it takes space. The sweep removes such objects once they are older than a grace period, which
must exceed the longest time between an object's write and its row's commit (an epoch's
bookkeeping, an upload's commit), so an object whose row is about to commit is never taken.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from service.store.base import StoreBase
from service.store.models import CheckpointRow, DatasetRow, JobRow

ARTIFACT_PREFIXES = ("datasets/", "jobs/")


class OrphanSweep(StoreBase):
    def sweep_orphans(self, *, older_than_seconds: float, now: datetime | None = None) -> list[str]:
        """Delete objects under the store's prefixes that no row names and that were last
        modified more than `older_than_seconds` ago; returns their keys."""
        cutoff = (now or self._now()) - timedelta(seconds=older_than_seconds)
        candidates = [listing.key for prefix in ARTIFACT_PREFIXES for listing in self.artifacts.list(prefix)
                      if listing.modified < cutoff]
        if not candidates:
            return []
        named = self._named_keys(candidates)
        orphans = [key for key in candidates if key not in named]
        for key in orphans:
            self.artifacts.delete(key)
        return orphans

    def _named_keys(self, keys: list[str]) -> set[str]:
        named: set[str] = set()
        with self.session_scope() as session:
            for start in range(0, len(keys), 500):  # bounded IN lists
                chunk = keys[start:start + 500]
                named.update(session.scalars(select(DatasetRow.key).where(DatasetRow.key.in_(chunk))))
                named.update(session.scalars(select(CheckpointRow.key).where(CheckpointRow.key.in_(chunk))))
                named.update(session.scalars(select(JobRow.model_key).where(JobRow.model_key.in_(chunk))))
        return named
