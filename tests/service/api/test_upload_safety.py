"""Hostile uploads through the whole app: each answers its 4xx without storing anything, within a
time bound (pytest-timeout) and with the server's allocations (tracemalloc, which NumPy reports
to) staying small next to what the upload would make a naive server allocate.

Bodies are streamed to the ASGI app chunk by chunk (tests/utils/asgi.py), so the measured peak is
the server's, not the test's copy of the body.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.api.limits import MULTIPART_OVERHEAD_BYTES
from tests.utils.asgi import CHUNK, peak_memory, upload
from tests.utils.uploads import classification_arrays, forged_npy, npy_bytes, zip_bytes

pytestmark = pytest.mark.timeout(60)
MiB = 2**20


@pytest.fixture
def database_url(sqlite_database_url) -> str:
    """SQLite only: nothing here depends on the database, and each upload is large."""
    return sqlite_database_url


def nothing_stored(api) -> bool:
    return (all(dataset.source == "builtin" for dataset in api.store.list_datasets())
            and api.stored_dataset_files() == [])


def zeros(total: int) -> Iterator[bytes]:
    block = bytes(CHUNK)
    for _ in range(total // CHUNK):
        yield block


# ---------------------------------------------------------------- size


def test_oversized_stream_413_while_streaming_with_flat_memory(make_api):
    api = make_api(max_upload_bytes=4 * MiB)
    offered = 1024 * MiB  # a gigabyte on offer, without a Content-Length
    with peak_memory() as peak:
        answer = upload(api.client.app, "big.npz", zeros(offered))
    assert answer.status == 413, answer.body
    assert "exceeds the limit" in answer.json()["detail"]
    assert answer.chunks_read <= (4 * MiB + MULTIPART_OVERHEAD_BYTES) // CHUNK + 2  # stopped at the cap
    assert not answer.finished_reading
    assert peak.mib < 4, f"{peak.mib:.1f} MiB"  # the parts past 1 MiB are spooled to disk, not held
    assert nothing_stored(api)


def test_declared_length_over_the_cap_413_before_reading(make_api):
    api = make_api(max_upload_bytes=4 * MiB)
    answer = upload(api.client.app, "big.npz", zeros(8 * MiB), content_length=10 * 2**30)
    assert (answer.status, answer.chunks_read) == (413, 0)


# ---------------------------------------------------------------- .npz


def test_forged_npz_header_declaring_a_huge_shape_is_refused_before_allocation(api):
    y = npy_bytes(np.arange(4) % 2)
    # 10^6 x 10^6 float64 = 8 TB declared, 64 bytes present; and 10^12 rows, over the row cap
    for shape, status, detail in (((10**6, 10**6), 400, "the header declares shape (1000000, 1000000)"),
                                  ((10**12, 2), 413, "rows exceed the cap")):
        data = zip_bytes({"X.npy": forged_npy(shape), "y.npy": y})
        with peak_memory() as peak:
            answer = upload(api.client.app, "forged.npz", data)
        assert answer.status == status, answer.body
        assert detail in answer.json()["detail"]
        assert peak.mib < 2, f"{peak.mib:.1f} MiB"
    assert nothing_stored(api)


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_object_array_400_and_never_unpickled(api, tmp_path):
    marker = tmp_path / "pwned"
    payload = np.array([RunsCodeWhenUnpickled(marker), None], dtype=object)
    assert b"mkdir" in pickle.dumps(payload)  # a loader with allow_pickle=True would run it
    data = zip_bytes({"X.npy": npy_bytes(np.eye(2)), "y.npy": npy_bytes(payload)})
    answer = upload(api.client.app, "evil.npz", data)
    assert answer.status == 400
    assert answer.json() == {"detail": "y: object arrays are not accepted", "field": "file"}
    assert not marker.exists()
    assert nothing_stored(api)


def deflated_zeros_npz(rows: int, features: int) -> bytes:
    """X of rows x features float64 zeros (deflate: about 1000:1), streamed into the archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f8", "fortran_order": False, "shape": (rows, features)})
            block = bytes(MiB)
            for _ in range(rows * features * 8 // MiB):
                member.write(block)
        archive.writestr("y.npy", npy_bytes(np.arange(rows) % 2))
    return buffer.getvalue()


def test_zip_bomb_400_without_inflating(api):
    bomb = deflated_zeros_npz(rows=100_000, features=128)  # 100 MiB of X inside
    assert len(bomb) < 2 * MiB
    with peak_memory() as peak:
        answer = upload(api.client.app, "bomb.npz", bomb)
    assert answer.status == 400, answer.body
    assert answer.json()["detail"].startswith("X: compression ratio")
    assert peak.mib < 2, f"{peak.mib:.1f} MiB"  # inflating X would take 100 MiB
    assert nothing_stored(api)


def test_zip_bomb_over_the_uncompressed_cap_413(make_api):
    api = make_api(max_upload_bytes=8 * MiB)
    bomb = deflated_zeros_npz(rows=20_000, features=128)  # 20 MiB inside, ~20 KiB outside
    with peak_memory() as peak:
        answer = upload(api.client.app, "bomb.npz", bomb)
    assert answer.status == 413, answer.body
    assert "uncompressed" in answer.json()["detail"]
    assert peak.mib < 2, f"{peak.mib:.1f} MiB"


def test_an_archive_listing_many_members_400_before_zipfile_parses_it(api):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(70_000):  # past 65535: the count lives in a zip64 end record
            archive.writestr(f"{i}.npy", b"")
    data = buffer.getvalue()
    with peak_memory() as peak:
        answer = upload(api.client.app, "many.npz", data)
    assert answer.status == 400, answer.body
    assert answer.json()["detail"].startswith("file: the archive lists 70000 members")
    # opening it with zipfile would build 70,000 ZipInfo objects (37 MiB here)
    assert peak.mib < 4, f"{peak.mib:.1f} MiB"


# ---------------------------------------------------------------- .csv


def csv_chunks(header: str, good_rows: int, last: str) -> Iterator[bytes]:
    yield header.encode()
    block = "1.5,2.5,0\n" * 6_000
    for _ in range(good_rows // 6_000):
        yield block.encode()
    yield last.encode()


@pytest.mark.parametrize("last, detail", [
    ("1.5,2.5\n", "expected 3 fields as in the header, found 2"),
    ("1.5,abc,1\n", "column 'b': 'abc' is not a number"),
    ("nan,2.5,1\n", "column 'a': 'nan' is not finite"),
    ("1e39,2.5,1\n", "column 'a': '1e39' is beyond float32's range"),
], ids=["ragged", "non-numeric", "nan", "float32-overflow"])
def test_bad_csv_400_names_the_line(api, last, detail):
    rows = 120_000  # ~1.2 MB of good rows first; the bad one is line rows + 2
    with peak_memory() as peak:
        answer = upload(api.client.app, "table.csv", csv_chunks("a,b,label\n", rows, last), {"target": "label"})
    assert answer.status == 400, answer.body
    assert answer.json()["detail"] == f"line {rows + 2}: {detail}"
    assert peak.mib < 24, f"{peak.mib:.1f} MiB"  # Python strings of one chunk of rows, and the labels
    assert nothing_stored(api)


def test_csv_with_an_endless_line_400(api):
    def one_line() -> Iterator[bytes]:
        yield b"a,label\n"
        yield from (b"1," * (CHUNK // 2) for _ in range(8 * MiB // CHUNK))  # 8 MiB without a newline

    with peak_memory() as peak:
        answer = upload(api.client.app, "wide.csv", one_line(), {"target": "label"})
    assert answer.status == 400, answer.body
    assert answer.json()["detail"] == "line 2: longer than 4194304 bytes"
    assert peak.mib < 16, f"{peak.mib:.1f} MiB"  # a line of 4 MiB, never a list of its 2 million fields


def test_csv_label_longer_than_the_cap_400_before_sizing_the_labels(api):
    text = "a,label\n" + "1,x\n" * 50_000 + "2," + "y" * 100_000 + "\n"
    answer = upload(api.client.app, "labels.csv", text.encode(), {"target": "label"})
    assert answer.status == 400
    assert answer.json()["detail"] == "line 50002: the target value is longer than 256 characters"


# ---------------------------------------------------------------- paths


def tree(root: Path, *, skip: Path) -> dict[str, int]:
    """Every file under root (but not under skip) with its size."""
    return {str(path.relative_to(root)): path.stat().st_size for path in root.rglob("*")
            if path.is_file() and skip not in path.parents}


def test_hostile_names_never_choose_a_path(api, tmp_path):
    artifacts = Path(api.settings.artifact_url).resolve()
    before = tree(tmp_path, skip=artifacts)
    data = zip_bytes({"X.npy": npy_bytes(classification_arrays()["X"]),
                      "y.npy": npy_bytes(classification_arrays()["y"])})
    hostile = "../../../../../../tmp/escaped"
    response = api.client.post("/v1/datasets", files={"file": (f"{hostile}.npz", data)},
                               data={"name": "../../etc/passwd"})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == "../../etc/passwd"  # only a label
    assert [path.name for path in api.stored_dataset_files()] == [f"{dataset['id']}.npz"]
    assert api.stored_dataset_files()[0].parent == artifacts / "datasets"

    nameless = api.client.post("/v1/datasets", files={"file": (f"{hostile}.npz", data)})
    assert nameless.json()["name"] == "escaped"  # the file name's stem, never its folders

    for dataset_id in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd"):
        response = api.client.post("/v1/jobs", json={"dataset": {"id": dataset_id}, "epochs": 1})
        assert response.status_code == 404, dataset_id
    for path in ("/v1/datasets/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/..%2F..%2Fetc%2Fpasswd/model",
                 "/v1/jobs/..%2F..%2Fetc%2Fpasswd/checkpoints", "/v1/jobs/..%2F..%2Fetc%2Fpasswd/history"):
        assert api.client.get(path).status_code == 404, path

    after = {name: size for name, size in tree(tmp_path, skip=artifacts).items()
             if not name.startswith(("backprop.db", "broker.db"))}  # the databases themselves change
    assert after == {name: size for name, size in before.items() if not name.startswith(("backprop.db", "broker.db"))}
    assert not Path("/tmp/escaped.npz").exists() and not Path("/tmp/escaped").exists()
