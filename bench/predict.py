"""Predict benchmark: `python -m bench.predict`.

Part 1, serving: starts `backprop api` and one `backprop worker` (real processes, embedded SQLite
defaults, loopback, open API), trains a digits classifier (64-64-10) and measures, sequentially
from one keep-alive client, `POST /v1/jobs/{id}/predict` for 1 row and for 1,000 rows of digits
(p50/p99), against the in-process reference: loading the downloaded `.npz` and predicting with the
engine (load + predict, as a script would), and predicting with the model already loaded (one
BLAS thread, as the API process runs with BLAS_THREADS=1); and,
as the API's own floor, GET /healthz and GET /v1/jobs/{id} from the same client.
Target: one-row predict p50 < 5 ms on loopback.

Part 2, ONNX: the reference MLP of ../shared/bench/anchors.py (784-256-128-10 ReLU, softmax,
float32) with He-initialized weights, exported to ONNX; onnxruntime (2 intra-op threads) against
the engine's `predict` (2 BLAS threads) on 60,000 x 784 inputs, interleaved, medians of REPS.

Every line prints medians and the ratio to its reference measured in the same run.
Run: python -m bench.predict          (REPS=5, REQUESTS=500)
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.stack import running_stack, wait_for_job

REPS = int(os.environ.get("REPS", "5"))
REQUESTS = int(os.environ.get("REQUESTS", "500"))  # one-row requests; 1,000-row ones: a fifth
TARGET_ONE_ROW_P50_MS = 5.0
N, D, H1, H2, C = 60_000, 784, 256, 128, 10
THREADS = 2
DIGITS_JOB = {"name": "bench-predict", "dataset": {"builtin": "digits"}, "epochs": 20, "seed": 0,
              "model": {"hidden_layers": [{"units": 64, "activation": "relu"}]}}


def ms(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values) * 1000
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def timings(call, count: int) -> list[float]:
    for _ in range(min(20, count)):  # warm-up: connections, caches, first allocations
        call()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def line(label: str, values: list[float], reference: list[float] | None = None, ref_label: str = "") -> float:
    p50, p99 = ms(values)
    text = f"{label:<44} n={len(values):<5} p50={p50:8.3f} ms  p99={p99:8.3f} ms"
    if reference is not None:
        text += f"  p50 / {ref_label} p50 = {p50 / ms(reference)[0]:7.2f}"
    print(text)
    return p50


def bench_serving(workdir: Path) -> None:
    from sklearn.datasets import load_digits

    from worker.nn import load_model

    digits = load_digits().data
    with running_stack(workdir, f"sqlite:///{workdir}/backprop.db", f"sqla+sqlite:///{workdir}/broker.db") as stack, \
            httpx.Client(base_url=stack.url, timeout=60) as client:
        job = client.post("/v1/jobs", json=DIGITS_JOB).json()
        job = wait_for_job(client, job["id"], ("succeeded", "failed", "cancelled"), timeout=300, stack=stack)
        assert job["status"] == "succeeded", job
        path = workdir / "model.npz"
        path.write_bytes(client.get(f"/v1/jobs/{job['id']}/model").content)
        url = f"/v1/jobs/{job['id']}/predict"
        model = load_model(path)
        print(f"digits model {job['id']}: {model!r}; API on {stack.url} (auth off, loopback)")

        print("--- the API's floor, same client")
        line("GET /healthz (no database)", timings(lambda: client.get("/healthz"), REQUESTS))
        get_job = timings(lambda: client.get(f"/v1/jobs/{job['id']}"), REQUESTS)
        line("GET /v1/jobs/{id} (one query)", get_job)
        for rows, count in ((1, REQUESTS), (1000, max(REQUESTS // 5, 20))):
            X = digits[:rows]
            body = json.dumps({"inputs": X.tolist()}).encode()  # encoded once: the server is measured
            headers = {"content-type": "application/json"}
            answer = client.post(url, content=body, headers=headers).json()
            assert answer["classes"] == model.predict(X).tolist()  # the same labels as the engine in-process

            def post():
                response = client.post(url, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(response.text)

            http = timings(post, count)
            load_and_predict = timings(lambda: load_model(path).predict(X), count)
            predict_only = timings(lambda: model.predict(X), count)
            print(f"--- {rows} row{'s' if rows > 1 else ''} of digits ({len(body):,} bytes sent, "
                  f"{len(client.post(url, content=body, headers=headers).content):,} answered)")
            p50 = line(f"POST /predict, {rows} rows", http, load_and_predict, "load .npz + predict")
            line("  in-process: load the .npz + predict", load_and_predict)
            line("  in-process: predict (model loaded)", predict_only)
            print(f"  POST p50 / in-process predict p50 = {p50 / ms(predict_only)[0]:.1f}; "
                  f"/ GET /v1/jobs/{{id}} p50 = {p50 / ms(get_job)[0]:.2f}")
            if rows == 1:
                print(f"  one-row p50 / target = {p50 / TARGET_ONE_ROW_P50_MS:.2f} (target p50 < "
                      f"{TARGET_ONE_ROW_P50_MS:g} ms)")


def reference_mlp():
    from worker.nn.model_file import Model, build_meta
    from worker.nn.network import LayerSpec, Network

    net = Network(D, [LayerSpec(H1, "relu"), LayerSpec(H2, "relu"), LayerSpec(C, "softmax")],
                  "categorical_crossentropy")
    net.initialize(np.random.default_rng(1))
    meta = build_meta(net, classes=list(range(C)), mean=None, std=None, target_ndim=1)
    return Model(net, meta)


def bench_onnx() -> None:
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    from service.portable.onnx_export import export_onnx

    model = reference_mlp()
    X = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)  # the anchors' inputs
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(export_onnx(model), options, providers=["CPUExecutionProvider"])
    with threadpool_limits(THREADS):
        contenders = {"engine predict": lambda: model.predict_proba(X),
                      "onnxruntime": lambda: session.run(None, {"input": X})[1]}
        outputs = {name: run() for name, run in contenders.items()}  # warm-up, and the check below
        gap = float(np.abs(outputs["engine predict"] - outputs["onnxruntime"]).max())
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(REPS):  # round robin: noise hits both alike
            for name, run in contenders.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    print(f"--- reference MLP {D}-{H1}-{H2}-{C} on {N:,} x {D} float32, {THREADS} threads, median of {REPS} "
          f"(largest probability difference {gap:.1e})")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<16} {seconds:.3f} s  ({N / seconds:,.0f} rows/s; all: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"onnxruntime / engine {medians['onnxruntime'] / medians['engine predict']:.2f}")


def main() -> int:
    from threadpoolctl import threadpool_info, threadpool_limits

    print("blas:", [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()
                    if i["user_api"] == "blas"])
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1, user_api="blas"):
        bench_serving(Path(tmp))  # in-process reference with one BLAS thread, as the API (BLAS_THREADS=1)
    bench_onnx()
    return 0


if __name__ == "__main__":
    sys.exit(main())
