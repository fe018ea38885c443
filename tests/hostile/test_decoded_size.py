"""Decoded size (issue 11, defect 2): every cap holds for the data as it is trained (float32: X,
X_val and the targets, one column per class), checked from the .npy headers before anything is
decoded; small compressible uploads of narrow dtypes cannot become large arrays. Refusals are 413
naming MAX_DATASET_BYTES and store nothing. X is stored in its own dtype when float32 holds it
exactly, compressed; the API's and the worker's peak memory are measured in processes of their own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.harness import running_stack
from tests.utils.rawhttp import peak_rss_bytes
from tests.utils.uploads import npz_bytes

MiB = 1024 * 1024
RNG = np.random.default_rng(0)


def bits(shape, dtype) -> np.ndarray:
    """0/1 values: compress about 8:1, well under the 100:1 ratio cap."""
    return RNG.integers(0, 2, size=shape).astype(dtype)


def bombs(scale: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(label, arrays) whose float32 training form is ~4x (or far more) their uploaded size;
    `scale` rows of 100 int8 features is about the trained-size cap / 4 * 4."""
    labels = bits(scale, np.int8)
    return [
        ("int8 X", {"X": bits((scale, 100), np.int8), "y": labels}),
        ("uint8 X", {"X": bits((scale, 100), np.uint8), "y": labels}),
        ("bool X", {"X": bits((scale, 100), bool), "y": labels}),
        ("float16 X", {"X": bits((scale // 2, 100), np.float16), "y": labels[:scale // 2]}),
        ("int8 X_val", {"X": bits((10, 100), np.int8), "y": np.arange(10) % 2,
                        "X_val": bits((scale, 100), np.int8), "y_val": labels}),
        ("many columns", {"X": bits((4, scale * 100), np.int8), "y": np.arange(4) % 2}),
        ("y wide (regression outputs)", {"X": bits((scale, 1), np.int8), "y": bits((scale, 100), np.uint8)}),
        ("one-hot of 1000 classes", {"X": bits((scale // 4, 1), np.uint8),
                                     "y": RNG.integers(0, 1000, size=scale // 4).astype(np.int16)}),
    ]


def stored(api):
    return api.client.get("/v1/datasets").json(), api.stored_dataset_files()


@pytest.fixture
def capped(make_api):
    return make_api(max_dataset_bytes=1 * MiB, max_upload_bytes=16 * MiB)


@pytest.mark.parametrize("label, arrays", bombs(8000), ids=[label for label, _ in bombs(8000)])
def test_arrays_over_the_trained_size_are_refused_before_decoding(capped, label, arrays):
    before = stored(capped)
    body = npz_bytes(compressed=True, **arrays)
    assert len(body) < 1 * MiB  # the upload itself is small
    response = capped.client.post("/v1/datasets", files={"file": ("bomb.npz", body)})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "MAX_DATASET_BYTES" in detail and "float32" in detail, detail
    assert stored(capped) == before


def test_a_wide_csv_is_refused_once_its_rows_pass_the_trained_size(capped):
    before = stored(capped)
    width = 20_000
    line = ",".join(["1"] * width) + "\n"
    text = ",".join(f"c{i}" for i in range(width)) + ",label\n" + "".join(line[:-1] + f",{i % 2}\n" for i in range(20))
    response = capped.upload_csv(text, target="label")
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("line ") and "MAX_DATASET_BYTES" in response.json()["detail"]
    assert stored(capped) == before


def test_x_is_stored_compressed_in_its_own_dtype_when_float32_holds_it(capped):
    for dtype, stored_as in ((np.int8, np.int8), (np.uint8, np.uint8), (bool, bool), (np.float16, np.float16),
                             (np.int16, np.int16), (np.float64, np.float32), (np.int64, np.float32)):
        X = bits((2000, 8), dtype)
        response = capped.client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(X=X, y=np.arange(2000) % 2))})
        assert response.status_code == 201, response.text
        key = capped.store.dataset_key(response.json()["id"])
        with capped.store.artifacts.local_copy(key) as path, np.load(path, allow_pickle=False) as saved:
            assert saved["X"].dtype == stored_as, dtype
            np.testing.assert_array_equal(saved["X"].astype(np.float32), X.astype(np.float32))
            assert Path(path).stat().st_size < X.nbytes  # compressed


def test_a_dataset_just_under_the_cap_is_accepted(capped):
    rows = (1 * MiB // 4) // (100 + 2) - 1  # 100 features, 2 classes one-hot: just under 1 MiB of float32
    response = capped.client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(
        X=bits((rows, 100), np.int8), y=np.arange(rows) % 2))})
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- memory, in processes of their own


@pytest.mark.integration
def test_the_api_peak_memory_stays_bounded_on_decoded_size_bombs(tmp_path):
    cap = 24 * MiB
    with running_stack(tmp_path, f"sqlite:///{tmp_path}/backprop.db", f"sqla+sqlite:///{tmp_path}/broker.db",
                       workers=0, extra_env={"MAX_DATASET_BYTES": str(cap), "MAX_UPLOAD_BYTES": str(64 * MiB)}) as stack:
        pid = stack.processes["api"].pid
        client = httpx.Client(base_url=stack.url, timeout=120)
        warm = client.post("/v1/datasets", files={"file": ("w.npz", npz_bytes(X=bits((100, 4), np.int8),
                                                                            y=np.arange(100) % 2))})
        assert warm.status_code == 201
        before = peak_rss_bytes(pid)
        for label, arrays in bombs(cap // 100):  # int8 X of 24 MiB: 96 MiB as float32
            response = client.post("/v1/datasets", files={"file": ("bomb.npz", npz_bytes(compressed=True, **arrays))})
            assert response.status_code == 413, (label, response.text)
        width = 5000
        row = ",".join(["1"] * width) + ",0\n"
        csv = ",".join(f"c{i}" for i in range(width)) + ",label\n" + row * (4 * cap // (4 * width) + 10)
        response = client.post("/v1/datasets", files={"file": ("wide.csv", csv.encode())}, data={"target": "label"})
        assert response.status_code == 413, response.text
        # refused from the headers (or, for classes and CSV rows, from small arrays): nothing large was decoded
        assert peak_rss_bytes(pid) - before < 48 * MiB
        # a float64 X just under the cap: its arrays as uploaded plus one float32 copy, no more
        rows = cap // 4 // 102 - 1  # 100 features and 2 one-hot classes
        response = client.post("/v1/datasets", files={"file": ("f64.npz", npz_bytes(
            X=RNG.normal(size=(rows, 100)), y=np.arange(rows) % 2))})
        assert response.status_code == 201, response.text
        assert peak_rss_bytes(pid) - before < 3 * cap + 48 * MiB
        client.close()


WORKER_PEAK = """
import sys
from pathlib import Path
from tests.utils.rawhttp import peak_rss_bytes
from worker.datasets import load_uploaded
from worker.nn.config import LayerConfig, TrainConfig
from worker.nn.trainer import Trainer

before = peak_rss_bytes("self")
data = load_uploaded(Path(sys.argv[1]))
Trainer(TrainConfig(hidden_layers=[LayerConfig(8)], epochs=1, batch_size=4096), data.X, data.y,
        X_val=data.X_val, y_val=data.y_val).fit()
print(peak_rss_bytes("self") - before)
"""


@pytest.mark.integration
@pytest.mark.parametrize("dtype, classes", [(np.float32, 2), (np.uint8, 2), (np.float32, 50)])
def test_the_worker_peak_for_a_dataset_is_at_most_four_times_its_trained_size(make_store, tmp_path, dtype, classes):
    """README: a training process holds at most about 4x the dataset's float32 size (MAX_DATASET_BYTES)."""
    rows, features = 200_000, 40
    X = RNG.integers(0, 100, size=(rows, features)).astype(dtype)
    path = tmp_path / "dataset.npz"
    np.savez_compressed(path, X=X, y=np.arange(rows) % classes)
    trained = rows * (features + classes) * 4
    out = subprocess.run([sys.executable, "-c", WORKER_PEAK, str(path)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 4 * trained + 16 * MiB, (int(out.stdout) / MiB, trained / MiB)
