"""Engine benchmark: one training epoch of the anchor workload, contenders timed in one run.

Workload (../shared/bench/anchors.py): 60,000 x 784 float32 inputs, 10 classes, MLP
784-256-128-10 ReLU, softmax cross-entropy, plain SGD lr 0.05, batch 128, one epoch, 2 BLAS
threads. Contenders: the anchor's lean hand-written NumPy loop (copied below), the engine, the
engine writing a checkpoint after every epoch, the engine with its first hidden layer frozen
(transfer learning: no gradient or update for it, no backward pass below the second layer),
scikit-learn's MLPClassifier, PyTorch CPU when installed, and as a floor the epoch's matrix
products alone. Repetitions are interleaved
(round robin) so machine noise hits every contender alike.
Prints seconds per epoch (median of REPS, default 5) and, last, `engine/lean <ratio>`.

Run: python -m bench.engine        (REPS=5; CONTENDERS=lean,engine,... to pick)
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

N, D, H1, H2, C, B = 60000, 784, 256, 128, 10, 128
LR = 0.05
REPS = int(os.environ.get("REPS", "5"))
THREADS = 2


def make_data():
    # identical to the anchor's data
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((D, C)).astype(np.float32)
    y = (X @ W).argmax(1)
    return X, y


def lean_numpy(X, y):
    """The anchor's lean loop, verbatim in substance; returns a one-epoch callable."""
    r = np.random.default_rng(1)
    W1 = (r.standard_normal((D, H1)) * np.sqrt(2 / D)).astype(np.float32); b1 = np.zeros(H1, np.float32)
    W2 = (r.standard_normal((H1, H2)) * np.sqrt(2 / H1)).astype(np.float32); b2 = np.zeros(H2, np.float32)
    W3 = (r.standard_normal((H2, C)) * np.sqrt(2 / H2)).astype(np.float32); b3 = np.zeros(C, np.float32)
    Y = np.eye(C, dtype=np.float32)[y]
    lr = np.float32(LR)

    def epoch():
        nonlocal W1, b1, W2, b2, W3, b3
        perm = r.permutation(N)
        for i in range(0, N, B):
            idx = perm[i:i + B]; x = X[idx]; t = Y[idx]
            h1 = x @ W1 + b1; np.maximum(h1, 0, out=h1)
            h2 = h1 @ W2 + b2; np.maximum(h2, 0, out=h2)
            z = h2 @ W3 + b3; z -= z.max(1, keepdims=True); np.exp(z, out=z); z /= z.sum(1, keepdims=True)
            g = (z - t) / np.float32(len(idx))
            gW3 = h2.T @ g; gb3 = g.sum(0); g = g @ W3.T; g *= (h2 > 0)
            gW2 = h1.T @ g; gb2 = g.sum(0); g = g @ W2.T; g *= (h1 > 0)
            gW1 = x.T @ g; gb1 = g.sum(0)
            W3 -= lr * gW3; b3 -= lr * gb3; W2 -= lr * gW2; b2 -= lr * gb2; W1 -= lr * gW1; b1 -= lr * gb1
    return epoch


def engine_config(freeze=()):
    from worker.nn import LayerConfig, OptimizerConfig, TrainConfig
    return TrainConfig(freeze=list(freeze),
        hidden_layers=[LayerConfig(H1, "relu"), LayerConfig(H2, "relu")],
        output_activation="softmax", loss="categorical_crossentropy", init="he_normal",
        optimizer=OptimizerConfig(name="sgd", learning_rate=LR), epochs=0, batch_size=B, seed=1,
        validation_split=0.0, standardize=False, dtype="float32",
    )


def engine(X, y, checkpoint_dir=None, freeze=()):
    """One more epoch of a Trainer per call (optionally checkpointing after it)."""
    from worker.nn import Trainer
    trainer = Trainer(engine_config(freeze), X, y)
    on_epoch_end = None
    if checkpoint_dir is not None:
        path = os.path.join(checkpoint_dir, "engine-checkpoint.npz")

        def on_epoch_end(event):
            event.trainer.save_checkpoint(path)

    def epoch():
        trainer.config.epochs = trainer.epoch + 1
        result = trainer.fit(on_epoch_end=on_epoch_end)
        assert result.stop_reason == "completed", result.stop_reason
    epoch.trainer = trainer
    return epoch


def gemm_only(X, y):
    """Only the eight matrix products of each batch (forward, weight and input gradients), into
    preallocated buffers: a floor for any NumPy implementation of this epoch, not a contender."""
    r = np.random.default_rng(2)
    x = np.ascontiguousarray(X[:B])
    W1, W2, W3 = (r.standard_normal(s, dtype=np.float32) for s in ((D, H1), (H1, H2), (H2, C)))
    h1, h2, z = np.empty((B, H1), np.float32), np.empty((B, H2), np.float32), np.empty((B, C), np.float32)
    g1, g2 = np.empty_like(h1), np.empty_like(h2)
    gW1, gW2, gW3 = np.empty_like(W1), np.empty_like(W2), np.empty_like(W3)

    def epoch():
        for _ in range(0, N, B):
            np.matmul(x, W1, out=h1); np.matmul(h1, W2, out=h2); np.matmul(h2, W3, out=z)
            np.matmul(h2.T, z, out=gW3); np.matmul(z, W3.T, out=g2); np.matmul(h1.T, g2, out=gW2)
            np.matmul(g2, W2.T, out=g1); np.matmul(x.T, g1, out=gW1)
    return epoch


def sklearn_mlp(X, y):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    warnings.simplefilter("ignore", ConvergenceWarning)

    def epoch():
        MLPClassifier((H1, H2), solver="sgd", learning_rate_init=LR, momentum=0.0, batch_size=B,
                      max_iter=1, alpha=0.0, random_state=0).fit(X, y)
    return epoch


def torch_cpu(X, y):
    import torch
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    m = torch.nn.Sequential(torch.nn.Linear(D, H1), torch.nn.ReLU(), torch.nn.Linear(H1, H2), torch.nn.ReLU(),
                            torch.nn.Linear(H2, C))
    opt = torch.optim.SGD(m.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        perm = torch.randperm(N)
        for i in range(0, N, B):
            idx = perm[i:i + B]
            opt.zero_grad(set_to_none=True)
            loss_fn(m(Xt[idx]), yt[idx]).backward()
            opt.step()
    return epoch


def engine_peak_memory(X, y) -> tuple[int, int]:
    """(peak bytes the engine allocates beyond the caller's dataset for a Trainer + one epoch,
    parameter bytes), traced by tracemalloc (NumPy reports its buffers to it)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    step = engine(X, y)
    step()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    params = sum(a.nbytes for a in step.trainer.network.params.values())
    return peak, params


def main():
    from threadpoolctl import threadpool_info, threadpool_limits
    default = "lean,engine,engine+checkpoint,engine+freeze0,sklearn,torch,gemm-only"
    names = os.environ.get("CONTENDERS", default).split(",")
    try:
        import torch  # noqa: F401
    except ImportError:
        if "torch" in names:
            print("torch: not installed, skipped (pip install torch==2.13.0)")
            names.remove("torch")
    X, y = make_data()
    with threadpool_limits(THREADS), tempfile.TemporaryDirectory() as tmp:
        print("blas:", [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()])
        makers = {"lean": lambda: lean_numpy(X, y), "engine": lambda: engine(X, y),
                  "engine+checkpoint": lambda: engine(X, y, tmp), "engine+freeze0": lambda: engine(X, y, freeze=[0]),
                  "sklearn": lambda: sklearn_mlp(X, y),
                  "torch": lambda: torch_cpu(X, y), "gemm-only": lambda: gemm_only(X, y)}
        epochs = {name: makers[name]() for name in names}
        times = {name: [] for name in names}
        cpu = {name: [] for name in names}  # CPU seconds of this process: less hurt by neighbours
        for name in names:  # warm-up: first-call allocations, BLAS thread start
            epochs[name]()
        for _ in range(REPS):
            for name in names:
                c, t = time.process_time(), time.perf_counter()
                epochs[name]()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name in names:
            spread = ", ".join(f"{t:.3f}" for t in times[name])
            print(f"{name:<18} {medians[name]:.3f} s/epoch  (median of {REPS}; min {min(times[name]):.3f}; "
                  f"cpu median {statistics.median(cpu[name]):.3f}; all: {spread})")
        if "engine" in medians:
            peak, params = engine_peak_memory(X, y)
            budget = 3 * params + 64 * 2**20
            print(f"engine peak memory beyond the dataset: {peak / 2**20:.1f} MiB "
                  f"(dataset {X.nbytes / 2**20:.1f} MiB, parameters {params / 2**20:.2f} MiB, "
                  f"budget beyond dataset {budget / 2**20:.1f} MiB)")
            import resource
            print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
            # the checkpoint's own cost, timed alone: steadier than two noisy epoch medians
            trainer = epochs["engine"].trainer
            path = os.path.join(tmp, "alone.npz")
            writes = []
            for _ in range(REPS):
                t = time.perf_counter()
                trainer.save_checkpoint(path)
                writes.append(time.perf_counter() - t)
            write = statistics.median(writes)
            print(f"checkpoint write alone: {write * 1e3:.1f} ms (median of {REPS}, "
                  f"{os.path.getsize(path) / 2**20:.2f} MiB) = {100 * write / medians['engine']:.1f}% of an engine epoch")
            for other in ("engine+checkpoint", "engine+freeze0", "sklearn", "torch", "gemm-only"):
                if other in medians:
                    inverse = other in ("engine+checkpoint", "engine+freeze0")  # the engine's own variants
                    label = f"{other.split('+')[1]}/engine" if inverse else f"engine/{other}"
                    ratio = medians[other] / medians["engine"] if inverse else medians["engine"] / medians[other]
                    print(f"{label} {ratio:.3f}")
        if "engine" in medians and "lean" in medians:
            # on a shared machine these two are steadier than the ratio of medians printed last
            paired = statistics.median(e / l for e, l in zip(times["engine"], times["lean"]))
            print(f"engine/lean by best epoch {min(times['engine']) / min(times['lean']):.3f}, "
                  f"median of paired rounds {paired:.3f}")
            print(f"engine/lean {medians['engine'] / medians['lean']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
