"""Checkpoints: complete, pickle-free, and resume bit for bit (one BLAS thread). Atomic writes are
the artifact store's (tests/service/store/test_artifacts.py)."""
import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from worker.nn import EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig, TrainConfig, Trainer
from worker.nn.checkpoint import write_npz


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
    for meta in (meta_a, meta_b):
        meta["best_entries"] = without_seconds(meta["best_entries"])
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
        resumed.load_checkpoint(path, history=paused.history)  # kept by the caller, as the service's database does
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
    assert meta["epoch"] == 2 and "history" not in meta  # O(model): the history is the caller's
    assert [entry["epoch"] for entry in meta["best_entries"]] == [meta["early_stopping"]["best_epoch"]]
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


def late_config(**overrides):
    # early stopping and reduce-on-plateau both live throughout (long patience, small delta)
    return config(**{"hidden_layers": [LayerConfig(6, "relu", batch_norm=True)], "epochs": 120,
                     "lr_schedule": ScheduleConfig("reduce_on_plateau", patience=3, factor=0.7, min_delta=1e-3,
                                                   cooldown=2),
                     "early_stopping": EarlyStoppingConfig(patience=40, min_delta=1e-4, restore_best_weights=True),
                     **overrides})


def paused_at(cfg, X, y, epoch, path):
    trainer = Trainer(cfg, X, y)

    def pause(event):
        if event.epoch == epoch:
            event.trainer.save_checkpoint(path)
            return "paused"
    result = trainer.fit(on_epoch_end=pause)
    assert result.stop_reason == "paused", result
    return trainer


@pytest.mark.parametrize("with_history", [True, False])
def test_resume_at_a_late_epoch_is_bit_exact_with_or_without_the_history(tmp_path, with_history):
    X, y = dataset(n=96, seed=4)
    cfg = late_config()
    path = tmp_path / "late.npz"
    with threadpool_limits(1):
        straight = Trainer(cfg, X, y)
        straight_result = straight.fit()
        pause_epoch = straight_result.epochs_run - 5
        paused = paused_at(cfg, X, y, pause_epoch, path)
        resumed = Trainer(cfg, X, y)
        resumed.load_checkpoint(path, history=paused.history if with_history else None)
        result = resumed.fit()
    # the run is long enough that the best epoch lies well before the checkpoint, and both
    # callbacks acted on the way: the state they need came back from the checkpoint alone
    assert pause_epoch > 30 and result.best_epoch < pause_epoch
    assert len({h["lr"] for h in straight_result.history}) > 2
    assert (result.stop_reason, result.epochs_run, result.best_epoch, result.stopped_epoch) == \
        (straight_result.stop_reason, straight_result.epochs_run, straight_result.best_epoch,
         straight_result.stopped_epoch)
    assert without_seconds([result.best_metrics]) == without_seconds([straight_result.best_metrics])
    expected_history = straight_result.history if with_history else straight_result.history[pause_epoch:]
    assert without_seconds(result.history) == without_seconds(expected_history)
    assert_same_state(straight, resumed)


def test_checkpoint_size_does_not_grow_with_the_epoch(tmp_path):
    X, y = dataset(n=16, seed=5)
    cfg = config(hidden_layers=[LayerConfig(4, "tanh")], epochs=2000, batch_size=16, validation_split=0.25,
                 early_stopping=EarlyStoppingConfig(patience=5000, restore_best_weights=True))
    sizes = {}

    def save(event):
        if event.epoch in (10, 2000):
            event.trainer.save_checkpoint(tmp_path / f"{event.epoch}.npz")
            sizes[event.epoch] = (tmp_path / f"{event.epoch}.npz").stat().st_size
    Trainer(cfg, X, y).fit(on_epoch_end=save)
    # equal but for the digits of a few JSON numbers (epochs, the best metrics, the RNG state),
    # 4 bytes a character in the meta's string array (format 1 held the history: megabytes by now)
    assert abs(sizes[2000] - sizes[10]) < 256, sizes


def test_a_format_1_checkpoint_with_its_history_still_resumes(tmp_path):
    X, y = dataset(seed=6)
    cfg = config(epochs=8)
    with threadpool_limits(1):
        straight = Trainer(cfg, X, y)
        straight_result = straight.fit()
        first = Trainer(cfg, X, y)
        first.fit(on_epoch_end=lambda e: "paused" if e.epoch == 4 else None)
        arrays, meta = first.state_dict()
        meta = {**{k: v for k, v in meta.items() if k != "best_entries"}, "format_version": 1,
                "history": first.history}  # what format 1 wrote
        write_npz(tmp_path / "v1.npz", arrays, json.loads(json.dumps(meta)))
        resumed = Trainer(cfg, X, y)
        resumed.load_checkpoint(tmp_path / "v1.npz")
        result = resumed.fit()
    assert without_seconds(result.history) == without_seconds(straight_result.history)
    assert result.best_epoch == straight_result.best_epoch
    assert_same_state(straight, resumed)


def test_a_history_that_does_not_match_the_checkpoint_is_refused(tmp_path):
    X, y = dataset()
    trainer = Trainer(config(epochs=3), X, y)
    trainer.fit()
    trainer.save_checkpoint(tmp_path / "c.npz")
    for wrong in (trainer.history[:2], trainer.history[1:], [*trainer.history, {"epoch": 4}]):
        with pytest.raises(ValueError, match="epochs 1..3"):
            Trainer(config(epochs=3), X, y).load_checkpoint(tmp_path / "c.npz", history=wrong)
