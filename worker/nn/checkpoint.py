"""Atomic `.npz` files with a JSON `meta` entry, read back with allow_pickle=False."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

META_KEY = "meta"


def atomic_save_npz(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays and `meta` (as a JSON string array) to `path`: temp file, fsync, os.replace."""
    path = Path(path)
    folder = path.parent
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: np.array(json.dumps(meta))})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not every platform can open a directory
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_npz(path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and parsed meta of a file written by `atomic_save_npz`."""
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
