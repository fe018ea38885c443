"""`.npz` files with a JSON `meta` entry, read back with allow_pickle=False.

The engine only serializes: `write_npz` writes into any binary file (a path or an open file).
Durability (temp file, fsync, rename, or a complete upload) belongs to whoever stores the
bytes: the service's artifact store (service/store/artifacts.py).
"""
from __future__ import annotations

import json

import numpy as np

META_KEY = "meta"


def write_npz(target, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays and `meta` (as a JSON string array) to `target`: a path or a binary file."""
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    np.savez(target, **arrays, **{META_KEY: np.array(json.dumps(meta))})


def frozen_writer(arrays: dict[str, np.ndarray], meta: dict):
    """A function writing `arrays` and `meta`, as they are now, to a target later (on another
    thread, while training goes on), exactly as write_npz would now."""
    arrays = {key: value.copy() for key, value in arrays.items()}
    meta = json.loads(json.dumps(meta))
    return lambda target: write_npz(target, arrays, meta)


def load_npz(path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and parsed meta of a file written by `write_npz`."""
    with np.load(path, allow_pickle=False) as f:
        if META_KEY not in f.files:
            raise ValueError(f"{path}: no {META_KEY!r} entry; not a file written by this engine")
        arrays = {k: f[k] for k in f.files if k != META_KEY}
        meta = json.loads(str(f[META_KEY]))
    return arrays, meta


def with_prefix(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def strip_prefix(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    head = prefix + "/"
    return {k[len(head):]: v for k, v in arrays.items() if k.startswith(head)}
