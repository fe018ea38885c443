"""Per-process caches: the loaded Model (for predict) and the files built from it (the ONNX form,
an autoencoder's encoder as a model file or ONNX), keyed by the model file's sha256, at most
MODEL_CACHE_SIZE of each, least recently used dropped first. The same bytes always give the same
Model and the same built files, so a key never goes stale.

Also which model a (job, owner) may use: a job gets its model once, when it succeeds, and it never
changes after (jobs are not deleted; their owner is fixed), so after one successful lookup a
repeated predict or download asks the database nothing. Only successes are remembered: a job
without a model (409) or another owner's (404) is looked up every time."""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.portable.onnx_export import export_onnx
from service.portable.source import find_model, read_model_bytes
from service.store import Store, StoredObject
from worker.nn import Model, load_model

V = TypeVar("V")
REMEMBERED_LOOKUPS = 4096  # (job, owner) -> StoredObject records, a few hundred bytes each


class LRUCache(Generic[V]):
    """A bounded mapping, safe across threads; building a missing value happens outside the lock
    (two threads missing the same key at once both build it, and one result is kept)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity: must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get_or_build(self, key: Hashable, build: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = build()
            self.put(key, value)
        return value


@dataclass(frozen=True)
class BuiltFile:
    content: bytes
    sha256: str


class ModelCache:
    def __init__(self, size: int):
        self.models: LRUCache[Model] = LRUCache(size)
        self.built_files: LRUCache[BuiltFile] = LRUCache(size)
        self.lookups: LRUCache[StoredObject] = LRUCache(REMEMBERED_LOOKUPS)

    def find(self, store: Store, job_id: str, owner: str | None) -> StoredObject:
        """The job's model record (NotFound, Conflict as find_model), from the database once."""
        return self.lookups.get_or_build((job_id, owner), lambda: find_model(store, job_id, owner))

    def model(self, store: Store, stored: StoredObject) -> Model:
        """The loaded model; its file is read only on a miss."""
        return self.models.get_or_build(
            stored.sha256, lambda: load_model(io.BytesIO(read_model_bytes(store, stored))))

    def onnx(self, store: Store, stored: StoredObject) -> BuiltFile:
        """The model as ONNX (NotExportable when it cannot be expressed), built once per process."""
        return self.built(store, stored, part="model", format="onnx")

    def built(self, store: Store, stored: StoredObject, *, part: str, format: str) -> BuiltFile:
        """A file built from the model once per process: `part` "model" (the whole network) or
        "encoder" (an autoencoder's layers up to its narrowest: Model.encoder, ValueError for other
        models), as a model file ("npz") or ONNX ("onnx", NotExportable when it cannot be expressed)."""
        def build() -> BuiltFile:
            model = self.model(store, stored)
            if part == "encoder":
                model = model.encoder()
            if format == "onnx":
                content = export_onnx(model)
            else:
                buffer = io.BytesIO()
                model.save(buffer)  # np.savez: fixed zip timestamps, so the same model gives the same bytes
                content = buffer.getvalue()
            return BuiltFile(content, hashlib.sha256(content).hexdigest())

        return self.built_files.get_or_build((stored.sha256, part, format), build)
