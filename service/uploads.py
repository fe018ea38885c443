"""Parse and validate dataset uploads (`.npz` or `.csv`) before anything is stored.

Pure functions over a seekable binary file (FastAPI's spooled `UploadFile.file`). Every check that
bounds memory runs before the data is decoded: the file size, the zip's central directory (member
count and size, read from its end record before `zipfile` parses it), the members, each `.npy`
header (dtype, shape x itemsize against the member's real size and the cap) and the compression
ratio. A CSV is read line by line (each line capped) and converted in chunks of bounded cells.
Errors are `UploadError` (400) or `UploadTooLarge` (413) with a message naming the array, field or
1-based CSV line.
"""
from __future__ import annotations

import csv
import math
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO, Iterator, Literal

import numpy as np

from service.config import Settings
from service.specs import DatasetInfo, Task, unstorable_text

MAX_CLASSES = 1000
MAX_COMPRESSION_RATIO = 100.0
RATIO_CHECK_FROM_BYTES = 64 * 1024  # tiny members compress absurdly well and cannot hurt
MAX_LABEL_CHARS = 256
CSV_CHUNK_ROWS = 16_384
CSV_CHUNK_CELLS = 1 << 20  # ~60 MB of Python strings at most before a chunk becomes float32
MAX_CSV_LINE_BYTES = 4 * 1024 * 1024
NPZ_ARRAYS = ("X", "y", "X_val", "y_val")
MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024  # 4 members need about 300 bytes
FEATURE_KINDS = "biuf"  # bool, signed, unsigned, float
LABEL_KINDS = "biufU"  # plus unicode strings for class labels


class UploadError(ValueError):
    """A malformed upload; `field` is the form field the reason is about."""

    status_code = 400

    def __init__(self, message: str, *, field: str = "file"):
        super().__init__(message)
        self.message = message
        self.field = field


class UploadTooLarge(UploadError):
    status_code = 413


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_rows: int
    max_classes: int = MAX_CLASSES
    max_compression_ratio: float = MAX_COMPRESSION_RATIO

    @classmethod
    def from_settings(cls, settings: Settings) -> "UploadLimits":
        return cls(max_bytes=settings.max_upload_bytes, max_rows=settings.max_dataset_rows)


@dataclass
class ParsedDataset:
    """What `Store.create_dataset` takes: the shape summary and the arrays to write."""

    info: DatasetInfo
    arrays: dict[str, np.ndarray]


def parse_upload(
    fileobj: BinaryIO,
    *,
    filename: str | None,
    limits: UploadLimits,
    target: str | None = None,
    task: Task | None = None,
) -> ParsedDataset:
    """Validate an uploaded `.npz` or `.csv` (chosen by the file name) and return its arrays.

    `task` overrides the inferred task (see `infer_task`).
    """
    size = _file_size(fileobj)
    if size > limits.max_bytes:
        raise UploadTooLarge(f"file: {size} bytes exceed the upload cap of {limits.max_bytes} bytes")
    if size == 0:
        raise UploadError("file: the file is empty")
    suffix = PurePath(filename or "").suffix.lower()
    if suffix == ".npz":
        if target is not None:
            raise UploadError("target: only .csv uploads name a target column; an .npz holds y", field="target")
        arrays = read_npz(fileobj, limits)
    elif suffix == ".csv":
        if not target:
            raise UploadError("target: required for .csv uploads: the name of the label column", field="target")
        arrays = read_csv(fileobj, target, limits)
    else:
        raise UploadError(f"file: expected a .npz or .csv file name, got {filename!r}")
    return build_dataset(arrays, limits, task=task)


def _file_size(fileobj: BinaryIO) -> int:
    fileobj.seek(0, 2)
    size = fileobj.tell()
    fileobj.seek(0)
    return size


# ---------------------------------------------------------------- .npz


_END_RECORD = struct.Struct("<4s4H2LH")  # zip end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")


def zip_directory_size(fileobj: BinaryIO) -> tuple[int, int]:
    """(members, central directory bytes) as the archive's end record declares them.

    Read before `zipfile.ZipFile` parses the directory into Python objects: a small upload could
    otherwise list millions of members and cost gigabytes of memory to open.
    """
    size = _file_size(fileobj)
    tail_size = min(size, _END_RECORD.size + 0xFFFF)  # the record, then a comment of up to 64 KiB
    fileobj.seek(size - tail_size)
    tail = fileobj.read(tail_size)
    fileobj.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _END_RECORD.size > len(tail):
        raise UploadError("file: not a valid .npz (zip) archive: no end of central directory")
    _, _, _, _, members, directory_bytes, _, _ = _END_RECORD.unpack_from(tail, at)
    if members == 0xFFFF or directory_bytes == 0xFFFFFFFF:  # zip64: the real values are elsewhere
        locator_at = at - _ZIP64_LOCATOR.size
        if locator_at < 0 or tail[locator_at:locator_at + 4] != b"PK\x06\x07":
            raise UploadError("file: not a valid .npz (zip) archive: broken zip64 end record")
        _, _, record_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
        fileobj.seek(record_offset)
        record = fileobj.read(_ZIP64_END_RECORD.size)
        fileobj.seek(0)
        if len(record) != _ZIP64_END_RECORD.size or record[:4] != b"PK\x06\x06":
            raise UploadError("file: not a valid .npz (zip) archive: broken zip64 end record")
        _, _, _, _, _, _, _, members, directory_bytes, _ = _ZIP64_END_RECORD.unpack(record)
    return members, directory_bytes


def read_npz(fileobj: BinaryIO, limits: UploadLimits) -> dict[str, np.ndarray]:
    """Check the archive's members and every `.npy` header, then load with allow_pickle=False."""
    members, directory_bytes = zip_directory_size(fileobj)
    if members > len(NPZ_ARRAYS) or directory_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
        raise UploadError(f"file: the archive lists {members} members in {directory_bytes} bytes; an .npz "
                          f"upload holds at most {len(NPZ_ARRAYS)} (X, y, X_val, y_val)")
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UploadError(f"file: not a valid .npz (zip) archive: {exc}") from None
    with archive:
        members = archive.infolist()
        names = [member.filename for member in members]
        if len(set(names)) != len(names):
            raise UploadError("file: the archive holds a member twice")
        expected = {f"{key}.npy" for key in NPZ_ARRAYS}
        unexpected = sorted(set(names) - expected)
        if unexpected:
            raise UploadError(
                f"file: unexpected members {unexpected}; an .npz upload holds only X, y, X_val and y_val")
        for required in ("X", "y"):
            if f"{required}.npy" not in names:
                raise UploadError(f"{required}: missing from the .npz")
        if ("X_val.npy" in names) != ("y_val.npy" in names):
            raise UploadError("X_val: X_val and y_val come together (give both or neither)")

        total = 0
        for member in members:
            key = member.filename.removesuffix(".npy")
            if member.flag_bits & 0x1:
                raise UploadError(f"{key}: encrypted members are not accepted")
            total += member.file_size
            if total > limits.max_bytes:
                raise UploadTooLarge(
                    f"{key}: the arrays hold more than {limits.max_bytes} bytes uncompressed (the upload cap)")
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > RATIO_CHECK_FROM_BYTES and ratio > limits.max_compression_ratio:
                raise UploadError(
                    f"{key}: compression ratio {ratio:.0f}:1 exceeds {limits.max_compression_ratio:.0f}:1")
            _check_npy_header(archive, member, key, limits)

    try:
        fileobj.seek(0)
        with np.load(fileobj, allow_pickle=False) as npz:
            return {key: npz[key] for key in NPZ_ARRAYS if key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        raise UploadError(f"file: could not read the arrays: {exc}") from None


def _check_npy_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo, key: str, limits: UploadLimits) -> None:
    """Reject a member before any array is allocated: dtype, rank, rows, and a forged shape."""
    try:
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise UploadError(f"{key}: unsupported .npy format version {version}")
            header_bytes = stream.tell()
    except UploadError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, SyntaxError) as exc:
        raise UploadError(f"{key}: not a valid .npy array: {exc}") from None

    if dtype.hasobject:
        raise UploadError(f"{key}: object arrays are not accepted")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise UploadError(f"{key}: structured dtypes are not accepted")
    is_features = key.startswith("X")
    allowed = FEATURE_KINDS if is_features else LABEL_KINDS
    if dtype.kind not in allowed:
        need = "numbers (bool, int or float)" if is_features else "numbers or strings"
        raise UploadError(f"{key}: dtype {dtype} is not accepted; {key} must hold {need}")
    if dtype.kind == "U" and dtype.itemsize > 4 * MAX_LABEL_CHARS:
        raise UploadError(f"{key}: labels longer than {MAX_LABEL_CHARS} characters are not accepted")

    ranks = (2,) if is_features else (1, 2)
    if len(shape) not in ranks:
        want = "2-D (rows, features)" if is_features else "1-D (rows,) or 2-D (rows, outputs)"
        raise UploadError(f"{key}: must be {want}, got shape {shape}")
    if shape[0] > limits.max_rows:
        raise UploadTooLarge(f"{key}: {shape[0]} rows exceed the cap of {limits.max_rows}")
    declared = math.prod(shape) * dtype.itemsize
    if header_bytes + declared != member.file_size:
        raise UploadError(
            f"{key}: the header declares shape {shape} of {dtype} ({declared} bytes) but the member "
            f"holds {member.file_size - header_bytes} bytes of data")


# ---------------------------------------------------------------- .csv


def read_csv(fileobj: BinaryIO, target: str, limits: UploadLimits) -> dict[str, np.ndarray]:
    """Read a CSV with a header line; every other column is a numeric feature.

    Errors name the 1-based line of the file (the header is line 1).
    """
    reader = csv.reader(_decoded_lines(fileobj))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise UploadError(f"line 1: {exc}") from None
    if header is None:
        raise UploadError("file: the CSV is empty; a header line naming the columns is required")
    header = [name.strip() for name in header]
    for position, name in enumerate(header, start=1):
        if not name:
            raise UploadError(f"line 1: column {position} of the header has no name")
    duplicates = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicates:
        raise UploadError(f"line 1: duplicate column names {duplicates}")
    if all(_is_number(name) for name in header):
        raise UploadError("line 1: a header line naming the columns is required; this line holds numbers")
    if target not in header:
        raise UploadError(f"target: no column named {target!r}; the header has {header}", field="target")
    if len(header) < 2:
        raise UploadError("line 1: at least one feature column is needed besides the target")

    width = len(header)
    target_at = header.index(target)
    feature_names = header[:target_at] + header[target_at + 1:]
    feature_chunks: list[np.ndarray] = []
    labels: list[str] = []
    label_lines: list[int] = []
    pending: list[list[str]] = []
    pending_lines: list[int] = []
    chunk_rows = max(1, min(CSV_CHUNK_ROWS, CSV_CHUNK_CELLS // width))

    def flush() -> None:
        if pending:
            feature_chunks.append(_parse_features(pending, pending_lines, feature_names))
            pending.clear()
            pending_lines.clear()

    try:
        for row in reader:
            line = reader.line_num
            if not row:
                continue  # blank line
            if len(row) != width:
                raise UploadError(f"line {line}: expected {width} fields as in the header, found {len(row)}")
            label = row[target_at].strip()
            if not label:
                raise UploadError(f"line {line}: the target column {target!r} is empty")
            if len(label) > MAX_LABEL_CHARS:  # before np.array(labels) sizes every label like the longest
                raise UploadError(f"line {line}: the target value is longer than {MAX_LABEL_CHARS} characters")
            labels.append(label)
            label_lines.append(line)
            if len(labels) > limits.max_rows:
                raise UploadTooLarge(f"line {line}: more than {limits.max_rows} rows (the cap)")
            del row[target_at]
            pending.append(row)
            pending_lines.append(line)
            if len(pending) >= chunk_rows:
                flush()
    except csv.Error as exc:
        raise UploadError(f"line {reader.line_num}: {exc}") from None
    flush()
    if not labels:
        raise UploadError("file: the CSV has a header but no data rows")
    X = np.concatenate(feature_chunks)
    return {"X": X, "y": _parse_labels(labels, label_lines, target)}


def _decoded_lines(fileobj: BinaryIO) -> Iterator[str]:
    number = 0
    while raw := fileobj.readline(MAX_CSV_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_CSV_LINE_BYTES:
            raise UploadError(f"line {number}: longer than {MAX_CSV_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(f"line {number}: not UTF-8 text") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_features(rows: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """One chunk of rows as float32, after checking every cell is a finite number."""
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, line in zip(rows, lines):
            for name, cell in zip(names, row):
                if not _is_number(cell):
                    shown = "an empty value" if not cell.strip() else repr(cell)
                    raise UploadError(f"line {line}: column {name!r}: {shown} is not a number") from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        row_at, column_at = (int(i) for i in np.argwhere(bad)[0])
        raise UploadError(
            f"line {lines[row_at]}: column {names[column_at]!r}: {rows[row_at][column_at].strip()!r} is not finite")
    with np.errstate(over="ignore"):  # overflow shows up as inf just below
        narrowed = values.astype(np.float32)
    bad = ~np.isfinite(narrowed)
    if bad.any():
        row_at, column_at = (int(i) for i in np.argwhere(bad)[0])
        raise UploadError(f"line {lines[row_at]}: column {names[column_at]!r}: "
                          f"{rows[row_at][column_at].strip()!r} is beyond float32's range")
    return narrowed


def _parse_labels(labels: list[str], lines: list[int], target: str) -> np.ndarray:
    """Integers if every label is one, else floats if every label is one, else strings."""
    text = np.array(labels)
    if text.dtype.itemsize > 4 * MAX_LABEL_CHARS:
        raise UploadError(f"target: labels longer than {MAX_LABEL_CHARS} characters are not accepted", field="target")
    try:
        return text.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        values = text.astype(np.float64)
    except ValueError:
        return text  # class labels
    bad = ~np.isfinite(values)
    if bad.any():
        at = int(np.argmax(bad))
        raise UploadError(f"line {lines[at]}: column {target!r}: {labels[at]!r} is not finite")
    return values


# ---------------------------------------------------------------- shared checks


def build_dataset(arrays: dict[str, np.ndarray], limits: UploadLimits, *, task: Task | None = None) -> ParsedDataset:
    """Check shapes and values, infer the task, and convert X to float32."""
    X = _features(arrays["X"], "X", min_rows=2)
    y = _targets(arrays["y"], "y", rows=X.shape[0])
    X_val = y_val = None
    if "X_val" in arrays or "y_val" in arrays:
        if "X_val" not in arrays or "y_val" not in arrays:
            raise UploadError("X_val: X_val and y_val come together (give both or neither)")
        X_val = _features(arrays["X_val"], "X_val", min_rows=1)
        if X_val.shape[1] != X.shape[1]:
            raise UploadError(f"X_val: has {X_val.shape[1]} features; X has {X.shape[1]}")
        y_val = _targets(arrays["y_val"], "y_val", rows=X_val.shape[0])
        if y_val.ndim != y.ndim or y_val.shape[1:] != y.shape[1:]:
            raise UploadError(f"y_val: shape {y_val.shape} does not match y's {y.shape} beyond the rows")
    val_rows = 0 if X_val is None else X_val.shape[0]
    if X.shape[0] + val_rows > limits.max_rows:
        raise UploadTooLarge(f"X: {X.shape[0] + val_rows} rows in all exceed the cap of {limits.max_rows}")

    task, classes, y, y_val = infer_task(y, y_val, limits, task=task)
    for label in classes:  # stored as JSON text: PostgreSQL holds no NUL
        if isinstance(label, str) and (reason := unstorable_text(label)) is not None:
            raise UploadError(f"y: the class label {label!r} cannot be stored: {reason}")
    info = DatasetInfo(
        rows=X.shape[0], features=X.shape[1], task=task, classes=classes,
        outputs=1 if (task == "classification" or y.ndim == 1) else y.shape[1],
        has_validation=X_val is not None, val_rows=val_rows,
    )
    out = {"X": X, "y": y}
    if X_val is not None:
        out["X_val"], out["y_val"] = X_val, y_val
    return ParsedDataset(info=info, arrays=out)


def _features(array: np.ndarray, key: str, *, min_rows: int) -> np.ndarray:
    if array.dtype.kind not in FEATURE_KINDS:
        raise UploadError(f"{key}: dtype {array.dtype} is not accepted; {key} must hold numbers")
    if array.ndim != 2:
        raise UploadError(f"{key}: must be 2-D (rows, features), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise UploadError(f"{key}: needs at least {min_rows} rows, got {array.shape[0]}")
    if array.shape[1] < 1:
        raise UploadError(f"{key}: needs at least one feature column")
    with np.errstate(over="ignore"):  # overflow shows up as inf just below
        converted = array.astype(np.float32, copy=False)  # a CSV's X is float32 already
    bad = ~np.isfinite(converted)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise UploadError(
            f"{key}: row {row}, column {column}: {array[row, column]!r} is not finite (or beyond float32's range)")
    return converted


def _targets(array: np.ndarray, key: str, *, rows: int) -> np.ndarray:
    if array.dtype.kind not in LABEL_KINDS:
        raise UploadError(f"{key}: dtype {array.dtype} is not accepted; {key} must hold numbers or strings")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (1, 2):
        raise UploadError(f"{key}: must be 1-D (rows,) or 2-D (rows, outputs), got shape {array.shape}")
    if array.shape[0] != rows:
        x_key = "X" if key == "y" else "X_val"
        raise UploadError(f"{key}: has {array.shape[0]} rows; {x_key} has {rows}")
    if array.ndim == 2 and array.shape[1] < 1:
        raise UploadError(f"{key}: needs at least one output column")
    if array.ndim == 2 and array.dtype.kind == "U":
        raise UploadError(f"{key}: a 2-D target must be numeric (one-hot classes or regression outputs)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        at = int(np.argmax(~np.isfinite(array).reshape(array.shape[0], -1).all(axis=1)))
        raise UploadError(f"{key}: row {at} is not finite")
    return array


def infer_task(
    y: np.ndarray, y_val: np.ndarray | None, limits: UploadLimits, *, task: Task | None = None,
) -> tuple[Task, list, np.ndarray, np.ndarray | None]:
    """Decide classification or regression and put y (and y_val) in the form the engine takes.

    Strings, bools and integers are class labels; floats are regression targets unless every
    value is a whole number and there are at most `max_classes` of them. A 2-D y of 0/1 rows with
    a single 1 is one-hot; any other 2-D y is multi-output regression. `task` overrides this.
    Returns (task, sorted classes, y, y_val); labels keep their type, regression targets become
    float32.
    """
    if task is None:
        task = _guess_task(y, limits)
    if task == "regression":
        if y.dtype.kind == "U":
            raise UploadError("y: regression needs numeric targets, not strings")
        return "regression", [], y.astype(np.float32), None if y_val is None else y_val.astype(np.float32)

    if y.ndim == 2:
        for key, array in (("y", y), ("y_val", y_val)):
            if array is not None and not _is_one_hot(array):
                raise UploadError(f"{key}: a 2-D classification target must be one-hot (0/1, one 1 per row)")
        classes = list(range(y.shape[1]))
        return "classification", classes, y.astype(np.float32), None if y_val is None else y_val.astype(np.float32)

    y = _as_labels(y, "y")
    y_val = None if y_val is None else _as_labels(y_val, "y_val")
    if y_val is not None and (y.dtype.kind == "U") != (y_val.dtype.kind == "U"):
        raise UploadError("y_val: labels must be of the same kind as y's (both strings or both numbers)")
    classes = np.unique(y)
    if len(classes) < 2:
        raise UploadError(f"y: only one class ({classes.tolist()}); classification needs at least 2")
    if len(classes) > limits.max_classes:
        raise UploadError(f"y: {len(classes)} classes exceed the cap of {limits.max_classes}")
    if y_val is not None:
        unseen = np.setdiff1d(np.unique(y_val), classes)
        if unseen.size:
            raise UploadError(f"y_val: labels not in y: {unseen[:10].tolist()}")
    return "classification", classes.tolist(), y, y_val


def _guess_task(y: np.ndarray, limits: UploadLimits) -> Literal["classification", "regression"]:
    if y.ndim == 2:
        return "classification" if _is_one_hot(y) else "regression"
    if y.dtype.kind in "biuU":
        return "classification"
    whole = np.array_equal(y, np.round(y))
    return "classification" if whole and len(np.unique(y)) <= limits.max_classes else "regression"


def _is_one_hot(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())


def _as_labels(y: np.ndarray, key: str) -> np.ndarray:
    """Class labels as int64 (bools and whole floats) or strings."""
    if y.dtype.kind == "U":
        return y
    if y.dtype.kind == "f":
        if not np.array_equal(y, np.round(y)):
            at = int(np.argmax(y != np.round(y)))
            raise UploadError(f"{key}: row {at}: {y[at]!r} is not a whole number; class labels are integers or strings")
        if np.abs(y).max(initial=0) > 2**53:
            raise UploadError(f"{key}: labels beyond 2**53 are not exact in floating point")
    if y.dtype.kind == "u" and y.max(initial=0) > np.iinfo(np.int64).max:
        raise UploadError(f"{key}: labels beyond int64's range")
    return y.astype(np.int64)
