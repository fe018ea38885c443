"""Factories for upload bodies: .npz archives (honest or forged) and CSV text."""
from __future__ import annotations

import io
import struct
import zipfile

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def forged_npy(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"\0" * 64) -> bytes:
    """An .npy whose header declares `shape` but which holds only `data`."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def zip_bytes(members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npz_bytes(*, compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def classification_arrays(rows: int = 30, features: int = 4, classes: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(rows, features)), "y": np.arange(rows) % classes}


def regression_arrays(rows: int = 30, features: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    return {"X": X, "y": np.sin(X[:, 0]) + 0.5}


def raw_npy(header: str | bytes, data: bytes = b"", *, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npy whose header is exactly `header` (padded to 64 bytes as numpy pads it): for malformed ones."""
    text = header.encode("latin-1") if isinstance(header, str) else header
    length_format = "<H" if version[0] == 1 else "<I"
    prefix = 6 + 2 + struct.calcsize(length_format)
    text += b" " * (-(prefix + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(text)) + text + data
