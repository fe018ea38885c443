"""Atomic artifact writes: temp file in the target folder, fsync, os.replace, fsync the folder."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temp_path_for(path: Path) -> Path:
    """A unique sibling of `path` (same folder, so os.replace is atomic); keeps the suffix."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, path: Path) -> tuple[int, str]:
    """fsync `temp`, atomically move it to `path`; return (size_bytes, sha256)."""
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    sha256 = file_sha256(temp)
    size = temp.stat().st_size
    os.replace(temp, path)
    fsync_dir(path.parent)
    return size, sha256


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> tuple[int, str]:
    """Write arrays as an .npz that never exists half-written; return (size_bytes, sha256)."""
    for key, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise ValueError(f"array {key!r} has object dtype; only numeric or string arrays are stored")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
        return publish(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
