"""Early stopping against hand-worked sequences (Keras 3 semantics, 1-based epochs)."""
import math

import numpy as np
import pytest

from worker.nn import EarlyStoppingConfig
from worker.nn.early_stopping import BestTracker, EarlyStopping, monitor_direction

WEIGHTS = {"layers.0.weight": np.zeros((2, 2), np.float32)}


def run(config, values, monitor="val_loss"):
    """Feed values epoch by epoch; return (stopped epoch or None, the stopper)."""
    es = EarlyStopping(config)
    for epoch, value in enumerate(values, start=1):
        weights = {"layers.0.weight": np.full((2, 2), epoch, np.float32)}
        if es.update(epoch, {monitor: value}, weights):
            return epoch, es
    return None, es


def test_patience_counts_epochs_without_improvement():
    # 1.0 best; 0.9 best; 0.95 wait 1; 0.91 wait 2 >= 2 -> stop at 4
    stopped, es = run(EarlyStoppingConfig(patience=2), [1.0, 0.9, 0.95, 0.91, 0.5])
    assert (stopped, es.best_epoch, es.best, es.stopped_epoch) == (4, 2, 0.9, 4)


def test_min_delta_must_be_beaten_not_met():
    # 1.0 best (vs inf); 0.96: 0.96 + 0.05 < 1.0 is false -> wait 1 >= 1 -> stop at 2
    stopped, es = run(EarlyStoppingConfig(patience=1, min_delta=0.05), [1.0, 0.96, 0.5])
    assert (stopped, es.best_epoch) == (2, 1)
    # 0.94 + 0.05 < 1.0 is an improvement
    stopped, es = run(EarlyStoppingConfig(patience=1, min_delta=0.05), [1.0, 0.94, 0.93])
    assert (stopped, es.best_epoch) == (3, 2)


def test_patience_zero_never_stops_at_the_first_epoch():
    # Keras's `epoch > 0` guard; a non-finite first value is not an improvement but cannot stop
    stopped, es = run(EarlyStoppingConfig(patience=0), [math.inf, 1.0, 1.0])
    assert (stopped, es.best_epoch) == (3, 2)


def test_baseline_only_resets_wait_when_beaten():
    # improvements above the baseline keep training going but do not reset wait:
    # 0.9 wait 1 (improved, not < 0.5); 0.8 wait 2 improved; 0.85 wait 3 >= 2 -> stop at 3
    stopped, es = run(EarlyStoppingConfig(patience=2, baseline=0.5), [0.9, 0.8, 0.85, 0.1])
    assert (stopped, es.best_epoch, es.best) == (3, 2, 0.8)
    # beating the baseline resets wait: 0.9 w1; 0.4 w0; 0.45 w1; 0.46 w2 -> stop at 4
    stopped, es = run(EarlyStoppingConfig(patience=2, baseline=0.5), [0.9, 0.4, 0.45, 0.46])
    assert (stopped, es.best_epoch) == (4, 2)
    # steady improvement that never beats the baseline never stops (Keras 3)
    stopped, es = run(EarlyStoppingConfig(patience=1, baseline=0.1), [0.9, 0.8, 0.7, 0.6, 0.5])
    assert stopped is None and es.wait == 5


def test_start_from_epoch_skips_the_warm_up():
    # epochs 1 and 2 ignored; 3.0 best at 3; 3.5 wait 1 >= 1 -> stop at 4
    stopped, es = run(EarlyStoppingConfig(patience=1, start_from_epoch=2), [5.0, 4.0, 3.0, 3.5, 1.0])
    assert (stopped, es.best_epoch) == (4, 3)


def test_max_mode_and_auto_direction():
    stopped, es = run(EarlyStoppingConfig(monitor="val_accuracy", patience=1), [0.5, 0.6, 0.6], "val_accuracy")
    assert (stopped, es.best_epoch, es.best) == (3, 2, 0.6)
    stopped, es = run(EarlyStoppingConfig(monitor="val_loss", mode="max", patience=1), [1.0, 2.0, 1.5])
    assert (stopped, es.best_epoch) == (3, 2)
    assert monitor_direction("val_r2", "auto") == "max" and monitor_direction("val_mae", "auto") == "min"
    with pytest.raises(ValueError, match="mode"):
        monitor_direction("val_loss", "sideways")


def test_restore_best_weights_keeps_the_best_epochs_copy():
    stopped, es = run(EarlyStoppingConfig(patience=2, restore_best_weights=True), [1.0, 0.7, 0.8, 0.9])
    assert stopped == 4 and es.best_epoch == 2
    assert (es.best_weights["layers.0.weight"] == 2).all()


def test_restore_best_weights_takes_the_first_monitored_epoch_even_without_improvement():
    es = EarlyStopping(EarlyStoppingConfig(patience=5, restore_best_weights=True))
    es.update(1, {"val_loss": math.inf}, {"layers.0.weight": np.ones((2, 2), np.float32)})
    assert es.best_epoch == 1 and es.best == math.inf
    assert (es.best_weights["layers.0.weight"] == 1).all()


def test_missing_monitor_is_ignored_like_keras():
    es = EarlyStopping(EarlyStoppingConfig(patience=0))
    assert es.update(2, {"train_loss": 1.0}, WEIGHTS) is False and es.wait == 0


def test_state_round_trip_continues_identically():
    values = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.76, 0.77]
    config = EarlyStoppingConfig(patience=2, min_delta=0.01, restore_best_weights=True)
    full_stop, full = run(config, values)
    first = EarlyStopping(config)
    for epoch, value in enumerate(values[:3], start=1):
        first.update(epoch, {"val_loss": value}, {"layers.0.weight": np.full((2, 2), epoch, np.float32)})
    arrays, scalars = first.state_dict()
    second = EarlyStopping(config)
    second.load_state_dict(arrays, scalars)
    stop = None
    for epoch, value in enumerate(values[3:], start=4):
        if second.update(epoch, {"val_loss": value}, {"layers.0.weight": np.full((2, 2), epoch, np.float32)}):
            stop = epoch
            break
    assert (stop, second.best_epoch, second.wait) == (full_stop, full.best_epoch, full.wait)
    assert np.array_equal(second.best_weights["layers.0.weight"], full.best_weights["layers.0.weight"])


def test_best_tracker_is_strict():
    tracker = BestTracker("val_loss")
    flags = [tracker.update(e, {"val_loss": v}) for e, v in enumerate([1.0, 1.0, 0.5, 0.6], start=1)]
    assert flags == [True, False, True, False] and tracker.best_epoch == 3
