"""Cross-validation: seeded stratified folds, per-fold bests and their summary, a refit on all
rows, and the whole run as one state that resumes bit for bit inside a fold."""
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from threadpoolctl import threadpool_limits

from worker.nn import (CrossValidation, EarlyStoppingConfig, LayerConfig, OptimizerConfig, ScheduleConfig,
                       TrainConfig, Trainer, fold_indices)

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def config(**overrides) -> TrainConfig:
    base = dict(hidden_layers=[LayerConfig(16, "relu", dropout=0.1, batch_norm=True)],
                optimizer=OptimizerConfig("adam", 0.02), epochs=12, batch_size=16, seed=3,
                lr_schedule=ScheduleConfig("cosine"),
                early_stopping=EarlyStoppingConfig(patience=2, min_delta=0.01, restore_best_weights=True))
    base.update(overrides)
    return TrainConfig(**base)


def without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


# ---------------------------------------------------------------- folds


def test_stratified_folds_partition_the_rows_and_keep_every_class_share():
    y = np.repeat([0, 1, 2], [50, 31, 7])
    folds = fold_indices(len(y), 5, seed=0, strata=y)
    assert len(folds) == 5
    vals = [val for _, val in folds]
    assert sorted(np.concatenate(vals).tolist()) == list(range(len(y)))  # each row validates exactly once
    for train, val in folds:
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
        assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1
    for c, count in ((0, 50), (1, 31), (2, 7)):
        per_fold = [int(np.count_nonzero(y[v] == c)) for v in vals]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count


def test_folds_are_seeded():
    y = np.arange(60) % 3
    a = fold_indices(60, 4, seed=1, strata=y)
    b = fold_indices(60, 4, seed=1, strata=y)
    c = fold_indices(60, 4, seed=2, strata=y)
    assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))
    assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))
    plain = fold_indices(61, 4, seed=1)
    assert sorted(len(v) for _, v in plain) == [15, 15, 15, 16]


@pytest.mark.parametrize("n, folds, strata, match", [
    (10, 1, None, "at least 2"), (3, 4, None, "need at least 4 rows"),
    (12, 4, np.array([0] * 9 + [1] * 3), "class 1 has 3 rows, fewer than the 4 folds"),
])
def test_bad_fold_counts_are_refused(n, folds, strata, match):
    with pytest.raises(ValueError, match=match):
        fold_indices(n, folds, 0, strata)


# ---------------------------------------------------------------- a whole run


def run(cfg=None, folds=4, **fit):
    events = []
    cv = CrossValidation(cfg or config(), IRIS_X, IRIS_Y, folds=folds)
    result = cv.fit(on_epoch_end=lambda e: events.append(e), **fit)
    return cv, result, events


def test_every_epoch_is_reported_with_its_fold_and_the_run():
    with threadpool_limits(1):
        cv, result, events = run()
    folds = [e.fold for e in events]
    assert folds == sorted(folds) and set(folds) == {0, 1, 2, 3, 4}  # 4 is the refit on all rows
    for k in range(4):
        epochs = [e.epoch for e in events if e.fold == k]
        assert epochs == list(range(1, result.folds[k].epochs_run + 1))
    assert all(e.run is cv for e in events) and all(e.trainer is not cv for e in events)
    refit = [e for e in events if e.fold == 4]
    assert len(refit) == result.refit_epochs and all(e.metrics["val_loss"] is None for e in refit)
    assert cv.epochs_done == len(events)


def test_summary_is_the_folds_best_epochs_and_the_refit_trains_for_their_mean():
    cfg = config()
    with threadpool_limits(1):
        cv, result, _ = run(cfg)
        # each fold by hand: a plain Trainer on the same rows, its best epoch by is_best
        expected = []
        for k, (train, val) in enumerate(fold_indices(len(IRIS_Y), 4, cfg.seed, IRIS_Y)):
            best = []
            trainer = Trainer(cfg, IRIS_X[train], IRIS_Y[train], IRIS_X[val], IRIS_Y[val])
            trainer.fit(on_epoch_end=lambda e: best.append((e.epoch, e.metrics)) if e.is_best else None)
            expected.append(best[-1])
        refit = Trainer(cv.refit_config(), IRIS_X, IRIS_Y)
        refit.fit()
    assert result.stop_reason == "completed" and result.stopped_fold is None
    assert [r.best_epoch for r in result.folds] == [epoch for epoch, _ in expected]
    for r, (_, metrics) in zip(result.folds, expected):
        assert r.best_metrics == {k: v for k, v in metrics.items() if k in ("train_loss", "val_loss", "train_accuracy",
                                                                           "val_accuracy")}
    assert len({r.epochs_run for r in result.folds}) > 1  # early stopping fired differently per fold
    val_accuracy = np.array([m["val_accuracy"] for _, m in expected])
    assert result.summary["mean"]["val_accuracy"] == pytest.approx(val_accuracy.mean(), abs=1e-12)
    assert result.summary["std"]["val_accuracy"] == pytest.approx(val_accuracy.std(), abs=1e-12)
    assert (result.summary["monitor"], result.summary["folds"]) == ("val_loss", 4)
    assert result.summary["mean"]["val_accuracy"] > 0.75  # it learned (iris, a dozen epochs at most)
    assert result.refit_epochs == int(np.floor(np.mean([e for e, _ in expected]) + 0.5))
    # the kept model is the refit: all rows, no validation, the folds' cosine length
    assert (cv.refit_config().validation_split, cv.refit_config().early_stopping) == (0.0, None)
    assert cv.refit_config().lr_schedule.t_max == cfg.epochs
    kept = cv.model.network.state_arrays()
    for key, value in refit.network.state_arrays().items():
        assert np.array_equal(kept[key], value), key


def test_a_run_is_deterministic():
    with threadpool_limits(1):
        a, result_a, events_a = run()
        b, result_b, events_b = run()
    assert result_a.folds == result_b.folds and result_a.summary == result_b.summary
    assert [without_seconds(e.metrics) for e in events_a] == [without_seconds(e.metrics) for e in events_b]
    for key, value in a.model.network.state_arrays().items():
        assert np.array_equal(b.model.network.state_arrays()[key], value)


# ---------------------------------------------------------------- stopping and resuming


@pytest.mark.parametrize("pause_at", [(1, 3), (0, None), (4, 2)], ids=["mid-fold", "fold-end", "in-the-refit"])
def test_resume_from_one_checkpoint_is_bit_identical(pause_at, tmp_path):
    path = tmp_path / "cv.npz"
    with threadpool_limits(1):
        straight, straight_result, straight_events = run()
        fold, epoch = pause_at
        if epoch is None:  # the last epoch of the fold: the next fold starts only after resuming
            epoch = straight_result.folds[fold].epochs_run
        first = CrossValidation(config(), IRIS_X, IRIS_Y, folds=4)

        def pause(e):
            if (e.fold, e.epoch) == (fold, epoch):
                e.run.save_checkpoint(path)
                return "paused"
        paused = first.fit(on_epoch_end=pause)
        assert (paused.stop_reason, paused.stopped_fold, paused.stopped_epoch) == ("paused", fold, epoch)
        with pytest.raises(RuntimeError, match="no model"):
            first.model

        resumed = CrossValidation(config(), IRIS_X, IRIS_Y, folds=4)
        resumed.load_checkpoint(path)
        assert (resumed.fold, resumed.trainer.epoch) == (fold, epoch)
        events = []
        result = resumed.fit(on_epoch_end=events.append)

    assert result.folds == straight_result.folds and result.summary == straight_result.summary
    assert result.refit_epochs == straight_result.refit_epochs
    done = straight_events.index(next(e for e in straight_events if (e.fold, e.epoch) == (fold, epoch)))
    assert [(e.fold, e.epoch, without_seconds(e.metrics), e.is_best) for e in events] == \
        [(e.fold, e.epoch, without_seconds(e.metrics), e.is_best) for e in straight_events[done + 1:]]
    arrays_a, meta_a = straight.state_dict()
    arrays_b, meta_b = resumed.state_dict()
    assert set(arrays_a) == set(arrays_b)
    for key in arrays_a:
        assert np.array_equal(arrays_a[key], arrays_b[key]), key
    for meta in (meta_a, meta_b):  # the trainer's own history is not part of what must match
        meta["trainer"].pop("history", None)
        for entry in meta["trainer"]["best_entries"]:
            entry.pop("seconds")
        for entry in (meta["best"], meta["last"]):
            if entry:
                entry["metrics"].pop("seconds")
    assert meta_a == meta_b


def test_a_stop_between_batches_rolls_back_and_resumes_exactly(tmp_path):
    path = tmp_path / "cv.npz"
    with threadpool_limits(1):
        _, straight_result, _ = run()
        calls = iter(range(10**6))
        cv = CrossValidation(config(), IRIS_X, IRIS_Y, folds=4)
        # the 11th batch of fold 1: its second epoch, part done
        stopped = cv.fit(should_stop=lambda: "cancelled" if cv.fold == 1 and next(calls) == 10 else None)
        assert (stopped.stop_reason, stopped.stopped_fold, stopped.stopped_epoch) == ("cancelled", 1, 2)
        assert cv.trainer.epoch == 1  # the unfinished epoch 2 was rolled back
        cv.save_checkpoint(path)
        resumed = CrossValidation(config(), IRIS_X, IRIS_Y, folds=4)
        resumed.load_checkpoint(path)
        result = resumed.fit()
    assert result.folds == straight_result.folds and result.summary == straight_result.summary


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "cv.npz"
    cv = CrossValidation(config(epochs=1), IRIS_X, IRIS_Y, folds=3)
    cv.save_checkpoint(path)
    with pytest.raises(ValueError, match="written for 3 folds of 150 rows, this run has 5 folds"):
        CrossValidation(config(epochs=1), IRIS_X, IRIS_Y, folds=5).load_checkpoint(path)
    with pytest.raises(ValueError, match="different configuration"):
        CrossValidation(config(epochs=1, seed=4), IRIS_X, IRIS_Y, folds=3).load_checkpoint(path)


def test_a_plateau_schedule_on_validation_is_refused_and_autoencoders_cross_validate():
    with pytest.raises(ValueError, match="lr_schedule.monitor"):
        CrossValidation(config(lr_schedule=ScheduleConfig("reduce_on_plateau")), IRIS_X, IRIS_Y, folds=3)
    X = load_digits().data[:300]
    ae = TrainConfig(task="autoencoder", loss="mse", output_activation="linear", hidden_layers=[LayerConfig(8, "tanh")],
                     optimizer=OptimizerConfig("adam", 0.01), epochs=3, seed=0)
    cv = CrossValidation(ae, X, folds=3)
    result = cv.fit()
    assert result.stop_reason == "completed" and set(result.summary["mean"]) == {"train_loss", "val_loss"}
    assert cv.model.task == "autoencoder" and cv.model.encoder().predict(X[:2]).shape == (2, 8)
