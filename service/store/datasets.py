"""Datasets: uploaded ones have a row and a file; built-ins are named `builtin:<name>` and have neither."""
from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.specs import BUILTIN_DATASETS, BUILTIN_PREFIX, DatasetInfo, DatasetPublic
from service.store.base import StoreBase, owned_row
from service.store.errors import NotFound
from service.store.models import DatasetRow


class DatasetStore(StoreBase):
    def create_dataset(self, *, owner: str | None, name: str, info: DatasetInfo,
                       arrays: dict[str, np.ndarray]) -> DatasetPublic:
        """Store the arrays (compressed), then commit the row that names them."""
        for key, array in arrays.items():
            if np.asarray(array).dtype.hasobject:
                raise ValueError(f"array {key!r} has object dtype; only numeric or string arrays are stored")
        dataset_id = self._new_id()
        stored = self.artifacts.write(self.dataset_key(dataset_id), lambda file: np.savez_compressed(file, **arrays))
        row = DatasetRow(
            id=dataset_id, owner=owner, name=name, rows=info.rows, features=info.features, task=info.task,
            classes=list(info.classes), outputs=info.outputs, has_validation=info.has_validation,
            val_rows=info.val_rows, key=stored.key, size_bytes=stored.size_bytes, sha256=stored.sha256,
            created_at=self._now(),
        )
        try:
            with self.session_scope(write=True) as session:
                session.add(row)
                session.flush()
                public = dataset_public(row)
        except BaseException:
            self.artifacts.delete(stored.key)  # no row, no object (else the orphan sweep takes it)
            raise
        return public

    def get_dataset(self, dataset_id: str, owner: str | None = None) -> DatasetPublic:
        if dataset_id.startswith(BUILTIN_PREFIX):
            return builtin_public(dataset_id)
        with self.session_scope() as session:
            return dataset_public(self._dataset_row(session, dataset_id, owner))

    def list_datasets(self, owner: str | None = None) -> list[DatasetPublic]:
        """Builtins first (by name), then uploads, newest first."""
        builtins = [builtin_public(BUILTIN_PREFIX + name) for name in sorted(BUILTIN_DATASETS)]
        query = select(DatasetRow).order_by(DatasetRow.created_at.desc(), DatasetRow.id.desc())
        if owner is not None:
            query = query.where(DatasetRow.owner == owner)
        with self.session_scope() as session:
            uploads = [dataset_public(row) for row in session.scalars(query)]
        return builtins + uploads

    def dataset_info(self, dataset_id: str, owner: str | None = None) -> DatasetInfo:
        public = self.get_dataset(dataset_id, owner)
        return DatasetInfo.model_validate(public.model_dump(include=set(DatasetInfo.model_fields)))

    def _dataset_row(self, session: Session, dataset_id: str, owner: str | None) -> DatasetRow:
        return owned_row(session, DatasetRow, "dataset", dataset_id, owner)


def builtin_public(dataset_id: str) -> DatasetPublic:
    name = dataset_id.removeprefix(BUILTIN_PREFIX)
    info = BUILTIN_DATASETS.get(name)
    if info is None:
        raise NotFound("dataset", dataset_id)
    return DatasetPublic(id=dataset_id, name=name, source="builtin", **info.model_dump())


def dataset_public(row: DatasetRow) -> DatasetPublic:
    return DatasetPublic(
        id=row.id, name=row.name, source="upload", rows=row.rows, features=row.features, task=row.task,
        classes=row.classes, outputs=row.outputs, has_validation=row.has_validation, val_rows=row.val_rows,
        created_at=row.created_at,
    )
