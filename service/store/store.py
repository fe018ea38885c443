"""The Store: every read and write of datasets, jobs, history, checkpoints and artifacts, one
concern per module (datasets, jobs, leases, checkpoints, orphans) behind one class.

Methods take and return `service.specs` models and plain values; ORM rows never leave the
package. Each method is one transaction (`session_scope`). Worker-side writes are guarded by the
job's lease, so a delivery that lost its claim can never write.
"""
from __future__ import annotations

from service.store.base import StoreBase, new_hex_id, utcnow  # noqa: F401 - re-exported
from service.store.checkpoints import CheckpointPolicy  # noqa: F401 - re-exported
from service.store.leases import ClaimedJob, EpochAck, LeaseStore  # noqa: F401 - re-exported
from service.store.orphans import OrphanSweep


class Store(LeaseStore, OrphanSweep, StoreBase):
    """Datasets (service.store.datasets), API-side jobs (jobs), worker leases (leases),
    checkpoint pruning (checkpoints) and orphaned artifacts (orphans), on one database and one
    artifact store (artifacts)."""
