"""The artifact store: datasets, checkpoints and models as objects under keys.

One small interface, two implementations chosen by `ARTIFACT_URL`:
- `LocalArtifacts` (a folder, the default): a write goes to a temp file in the target folder,
  is fsynced and renamed into place (then the folder is fsynced): the project's one atomic writer.
- `S3Artifacts` (`s3://bucket/prefix`, any S3-compatible server with `S3_ENDPOINT_URL`): a write
  is spooled to a private temp file, then uploaded; S3 shows an object only once its upload is
  complete, so a reader never sees half of one.

Either way `write` returns the key, size and sha256 (hashed while writing, so the bytes are not
read twice), and the database stores those, never a path. Keys are built from ids only
(`datasets/<id>.npz`, `jobs/<id>/checkpoints/epoch-000012.npz`, `jobs/<id>/model.npz`).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

_CHUNK = 1 << 20
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
TEMP_MARK = ".tmp-"  # in the name of a local write in progress (an orphan if its writer died)


@dataclass(frozen=True)
class StoredObject:
    """A complete object: what a database row names."""

    key: str
    size_bytes: int | None  # None only for models stored before sizes were recorded
    sha256: str


@dataclass(frozen=True)
class ObjectListing:
    key: str
    size_bytes: int
    modified: datetime  # aware UTC


class ArtifactError(RuntimeError):
    """An artifact is missing or the store cannot be reached."""


class HashingWriter(io.RawIOBase):
    """A write-only, forward-only binary file that hashes and counts what passes through it, so
    an object's sha256 costs no second read. zipfile (np.savez) writes such a stream in order."""

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        self.size += view.nbytes
        self._raw.write(view)
        return view.nbytes

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self.size

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def check_key(key: str) -> str:
    """Keys are relative, slash-separated names of safe characters: never a path that escapes."""
    if not _KEY.fullmatch(key) or ".." in key.split("/"):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(ABC):
    url: str

    @abstractmethod
    def write(self, key: str, write: Callable[[BinaryIO], object]) -> StoredObject:
        """Store what `write(file)` writes under `key`, all or nothing; replaces an existing object."""

    @abstractmethod
    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        """A readable (streaming) file of the object; ArtifactError if it does not exist."""

    @abstractmethod
    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file holding the object for the duration of the block (np.load needs one)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectListing]:
        """Every object whose key starts with `prefix` (in-progress local writes included)."""

    def download_url(self, key: str, *, filename: str, expires_seconds: int) -> str | None:
        """A URL a client may fetch the object from directly, or None (serve it through the API)."""
        return None

    def local_path(self, key: str) -> Path | None:
        """The object's own file when the store is a local folder (served without copying), else None."""
        return None

    def stream(self, key: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The object's bytes in chunks, for a streaming response. The object is opened now, so a
        missing one raises ArtifactError here, before a response has started."""
        opened = self.open(key)
        handle = opened.__enter__()

        def chunks() -> Iterator[bytes]:
            try:
                while chunk := handle.read(chunk_size):
                    yield chunk
            finally:
                opened.__exit__(None, None, None)

        return chunks()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- a local folder


class LocalArtifacts(ArtifactStore):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def write(self, key: str, write: Callable[[BinaryIO], object]) -> StoredObject:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}{TEMP_MARK}{uuid.uuid4().hex}")
        try:
            with open(temp, "wb") as raw:
                out = HashingWriter(raw)
                write(out)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return StoredObject(key, out.size, out.sha256)

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            handle = open(self.path(key), "rb")
        except FileNotFoundError:
            raise ArtifactError(f"artifact {key!r} is missing from {self.url}") from None
        with handle:
            yield handle

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise ArtifactError(f"artifact {key!r} is missing from {self.url}")
        yield path  # already local: no copy

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[ObjectListing]:
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while listing
                    continue
                yield ObjectListing(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- S3-compatible object storage


class S3Artifacts(ArtifactStore):
    """Objects in `bucket` under `prefix`; temp files (spooled writes, local copies) in `work_dir`."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 work_dir: Path | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.gettempdir())
        self._client = client or boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    @contextmanager
    def _temp_file(self) -> Iterator[Path]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="artifact-", dir=self.work_dir)
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def write(self, key: str, write: Callable[[BinaryIO], object]) -> StoredObject:
        name = self._object(key)
        with self._temp_file() as temp:
            with open(temp, "wb") as raw:
                out = HashingWriter(raw)
                write(out)
            # upload_file switches to a multipart upload for large files; either way the object
            # becomes visible only when complete
            self._client.upload_file(str(temp), self.bucket, name,
                                     ExtraArgs={"Metadata": {"sha256": out.sha256}})
        return StoredObject(key, out.size, out.sha256)

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"]
        except self._client.exceptions.NoSuchKey:
            raise ArtifactError(f"artifact {key!r} is missing from {self.url}") from None
        try:
            yield body
        finally:
            body.close()

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        from botocore.exceptions import ClientError

        with self._temp_file() as temp:
            try:
                self._client.download_file(self.bucket, self._object(key), str(temp))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise ArtifactError(f"artifact {key!r} is missing from {self.url}") from None
                raise
            yield temp

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def list(self, prefix: str = "") -> Iterator[ObjectListing]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield ObjectListing(self._key(item["Key"]), item["Size"], item["LastModified"].astimezone(timezone.utc))

    def download_url(self, key: str, *, filename: str, expires_seconds: int) -> str | None:
        if expires_seconds <= 0:
            return None
        return self._client.generate_presigned_url(
            "get_object", ExpiresIn=expires_seconds,
            Params={"Bucket": self.bucket, "Key": self._object(key),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                    "ResponseContentType": "application/octet-stream"},
        )

    def close(self) -> None:
        self._client.close()


def open_artifact_store(url: str, *, endpoint_url: str | None = None, work_dir: Path | None = None) -> ArtifactStore:
    """`s3://bucket/prefix` or a local folder (a path, or file:///path)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"ARTIFACT_URL {url!r}: name a bucket, s3://bucket/prefix")
        return S3Artifacts(parsed.netloc, parsed.path, endpoint_url=endpoint_url, work_dir=work_dir)
    if parsed.scheme == "file":
        return LocalArtifacts(Path(parsed.path))
    if parsed.scheme:
        raise ValueError(f"ARTIFACT_URL {url!r}: use a folder, file:///folder or s3://bucket/prefix")
    return LocalArtifacts(Path(url))

