"""Checkpoints: complete, pickle-free, and resume bit for bit (one BLAS thread). Atomic writes are
the artifact store's (tests/service/store/test_artifacts.py)."""
import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from worker.nn import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig, Trainer


def dataset(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, 6)).astype(np.float32)
    y = np.where(X[:, 0] * X[:, 1] + 0.5 * X[:, 2] > 0, "yes", "no")
    flip = rng.random(n) < 0.1
    y[flip] = np.where(y[flip] == "yes", "no", "yes")
    return X, y


def config(**overrides):
    base = dict(
        hidden_layers=[LayerConfig(16, "relu", dropout=0.2, batch_norm=True), LayerConfig(8, "elu", dropout=0.1)],
        optimizer=OptimizerConfig("adamw", 0.01), epochs=12, batch_size=32, seed=7, l2=1e-4, clip_norm=5.0,
        lr_schedule=ScheduleConfig("reduce_on_plateau", patience=1, factor=0.5, min_delta=0.0),
        early_stopping=EarlyStoppingConfig(patience=50, min_delta=0.0, restore_best_weights=True),
        validation_split=0.25)
    base.update(overrides)
    return TrainConfig(**base)


def without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_same_state(a: Trainer, b: Trainer):
    arrays_a, meta_a = a.state_dict()
    arrays_b, meta_b = b.state_dict()
    assert set(arrays_a) == set(arrays_b)
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype
        assert np.array_equal(arrays_a[key], arrays_b[key]), key
    meta_a["history"], meta_b["history"] = without_seconds(meta_a["history"]), without_seconds(meta_b["history"])
    assert meta_a == meta_b


def test_resume_after_epoch_k_is_bit_identical(tmp_path):
    X, y = dataset()
    path = tmp_path / "ckpt.npz"
    with threadpool_limits(1):
        straight = Trainer(config(), X, y)
        straight_result = straight.fit()

        first = Trainer(config(), X, y)

        def pause_at_5(event):
            if event.epoch == 5:
                event.trainer.save_checkpoint(path)
                return "paused"
        paused = first.fit(on_epoch_end=pause_at_5)
        assert (paused.stop_reason, paused.epochs_run, paused.stopped_epoch) == ("paused", 5, 5)

        resumed = Trainer(config(), X, y)
        resumed.load_checkpoint(path)
        assert resumed.epoch == 5
        result = resumed.fit()

    assert straight_result.epochs_run == result.epochs_run == 12
    assert without_seconds(result.history) == without_seconds(straight_result.history)
    assert (result.stop_reason, result.best_epoch, result.stopped_epoch) == \
        (straight_result.stop_reason, straight_result.best_epoch, straight_result.stopped_epoch)
    assert_same_state(straight, resumed)
    # the learning rate really changed on the way, so the schedule state mattered
    assert len({h["lr"] for h in result.history}) > 1


def test_a_snapshot_written_later_resumes_as_a_checkpoint_saved_then(tmp_path):
    X, y = dataset(seed=3)
    with threadpool_limits(1):
        straight = Trainer(config(epochs=6), X, y)
        straight.fit()

        first = Trainer(config(epochs=6), X, y)
        snapshots = {}
        first.fit(on_epoch_end=lambda e: snapshots.setdefault(e.epoch, e.trainer.checkpoint_snapshot()))
        snapshots[3](tmp_path / "epoch3.npz")  # written after epochs 4-6 changed every live array

        resumed = Trainer(config(epochs=6), X, y)
        resumed.load_checkpoint(tmp_path / "epoch3.npz")
        assert resumed.epoch == 3
        resumed.fit()
    assert_same_state(straight, resumed)


def test_cancel_mid_epoch_rolls_back_to_the_epoch_start_and_resumes_exactly(tmp_path):
    X, y = dataset(seed=1)
    with threadpool_limits(1):
        straight = Trainer(config(epochs=6), X, y)
        straight.fit()

        interrupted = Trainer(config(epochs=6), X, y)
        batches = {"n": 0}
        reported = []

        def should_stop():
            batches["n"] += 1
            return "cancelled" if batches["n"] == 3 * 6 + 2 else None  # two batches into epoch 4
        result = interrupted.fit(on_epoch_end=lambda e: reported.append(e.epoch), should_stop=should_stop)
        assert (result.stop_reason, result.epochs_run, result.stopped_epoch) == ("cancelled", 3, 4)
        assert reported == [1, 2, 3]  # the unfinished epoch is not reported
        interrupted.save_checkpoint(tmp_path / "c.npz")

        resumed = Trainer(config(epochs=6), X, y)
        resumed.load_checkpoint(tmp_path / "c.npz")
        resumed.fit()
    assert_same_state(straight, resumed)


def test_resume_after_early_stopping_fired_does_not_train_on(tmp_path):
    X, y = dataset(seed=2)
    cfg = config(early_stopping=EarlyStoppingConfig(patience=0, min_delta=10.0), epochs=10,
                 lr_schedule=ScheduleConfig("constant"))
    trainer = Trainer(cfg, X, y)
    result = trainer.fit(on_epoch_end=lambda e: e.trainer.save_checkpoint(tmp_path / "last.npz"))
    assert (result.stop_reason, result.stopped_epoch) == ("early_stopped", 2)
    again = Trainer(cfg, X, y)
    again.load_checkpoint(tmp_path / "last.npz")
    second = again.fit()
    assert (second.stop_reason, second.epochs_run, second.stopped_epoch) == ("early_stopped", 2, 2)


def test_checkpoint_holds_the_whole_state_without_pickle(tmp_path):
    X, y = dataset()
    trainer = Trainer(config(epochs=2), X, y)
    trainer.fit()
    trainer.save_checkpoint(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:
        files = set(f.files)
        meta = json.loads(str(f["meta"]))
        assert f["meta"].dtype.kind == "U"
    assert {"network/layers.0.weight", "network/layers.0.bn_mean", "optimizer/m.layers.2.bias",
            "early_stopping/layers.1.weight"} <= files
    assert meta["epoch"] == 2 and len(meta["history"]) == 2
    assert {"optimizer", "schedule", "early_stopping", "best_tracker", "rng", "config"} <= set(meta)
    assert meta["early_stopping"]["best_epoch"] in (1, 2)
    assert meta["rng"]["bit_generator"] == "PCG64"
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temp file left behind


def test_a_checkpoint_from_another_configuration_is_refused(tmp_path):
    X, y = dataset()
    trainer = Trainer(config(epochs=1), X, y)
    trainer.fit()
    trainer.save_checkpoint(tmp_path / "c.npz")
    other = Trainer(config(epochs=1, batch_size=16), X, y)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_checkpoint(tmp_path / "c.npz")
    longer = Trainer(config(epochs=5), X, y)  # more epochs is allowed: training continues
    longer.load_checkpoint(tmp_path / "c.npz")
    assert longer.fit().epochs_run == 5
