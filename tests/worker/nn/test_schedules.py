"""Every learning-rate schedule, and reduce-on-plateau against hand-worked sequences."""
import math

import numpy as np
import pytest

from worker.nn import ScheduleConfig
from worker.nn.schedules import make_schedule


def lrs(config, epochs=6, base=1.0, total=10):
    schedule = make_schedule(config, base, total)
    return [schedule.lr(e) for e in range(1, epochs + 1)]


def test_constant():
    assert lrs(ScheduleConfig("constant"), base=0.3) == [0.3] * 6


def test_step():
    assert lrs(ScheduleConfig("step", step_size=2, gamma=0.5)) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_exponential():
    assert lrs(ScheduleConfig("exponential", gamma=0.5), epochs=4) == [1.0, 0.5, 0.25, 0.125]


def test_cosine_with_floor_and_t_max():
    got = lrs(ScheduleConfig("cosine", t_max=4, min_lr=0.1))
    half = 0.5 * math.sqrt(0.5)
    want = [1.0, 0.1 + 0.9 * (0.5 + half), 0.55, 0.1 + 0.9 * (0.5 - half), 0.1, 0.1]
    assert got == pytest.approx(want, abs=1e-12)


def test_cosine_defaults_to_all_epochs():
    got = lrs(ScheduleConfig("cosine"), epochs=5, total=4)
    assert got == pytest.approx([1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5, 0.5 - 0.5 * math.sqrt(0.5), 0.0], abs=1e-12)


def plateau(config, values, base=1.0, monitor="val_loss"):
    schedule = make_schedule(config, base, 100)
    after = []
    for epoch, value in enumerate(values, start=1):
        schedule.on_epoch_end(epoch, {monitor: value})
        after.append(schedule.lr(epoch + 1))
    return after, schedule


def f32(values):
    return [float(np.float32(v)) for v in values]


def test_reduce_on_plateau_patience_cooldown_and_floor():
    config = ScheduleConfig("reduce_on_plateau", factor=0.5, patience=2, min_delta=0.0, cooldown=1, min_lr=0.1)
    values = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    # e1 best; e2 wait 1; e3 wait 2 -> 0.5, cooldown 1; e4 cooldown ends (wait 0) then wait 1;
    # e5 wait 2 -> 0.25; e6 wait 1; e7 improves; e8 w1; e9 w2 -> 0.125; e10 w1; e11 w2 -> max(0.0625,
    # 0.1); e12 w1; e13 w2 but lr is already float32(min_lr): no change
    got, schedule = plateau(config, values)
    assert got == f32([1, 1, .5, .5, .25, .25, .25, .25, .125, .125, .1, .1, .1])
    assert schedule.wait == 2


def test_reduce_on_plateau_min_delta_and_max_mode():
    config = ScheduleConfig("reduce_on_plateau", monitor="val_accuracy", factor=0.1, patience=1, min_delta=0.05)
    # 0.5 best; 0.54 is not > 0.5 + 0.05 -> wait 1 -> 0.1; 0.6 improves; 0.6 wait 1 -> 0.01
    got, _ = plateau(config, [0.5, 0.54, 0.6, 0.6], monitor="val_accuracy")
    assert got == f32([1.0, 0.1, 0.1, 0.01])


def test_reduce_on_plateau_state_round_trip():
    config = ScheduleConfig("reduce_on_plateau", factor=0.5, patience=1, cooldown=2)
    values = [3.0, 3.0, 2.0, 2.5, 2.5, 2.5, 2.5]
    full, _ = plateau(config, values)
    first = make_schedule(config, 1.0, 100)
    for epoch, value in enumerate(values[:4], start=1):
        first.on_epoch_end(epoch, {"val_loss": value})
    second = make_schedule(config, 1.0, 100)
    second.load_state_dict(first.state_dict())
    rest = []
    for epoch, value in enumerate(values[4:], start=5):
        second.on_epoch_end(epoch, {"val_loss": value})
        rest.append(second.lr(epoch + 1))
    assert rest == full[4:]


def test_unknown_schedule_names_the_field():
    with pytest.raises(ValueError, match="lr_schedule.name"):
        make_schedule(ScheduleConfig("warmup"), 1.0, 10)
    with pytest.raises(ValueError, match="lr_schedule.factor"):
        make_schedule(ScheduleConfig("reduce_on_plateau", factor=1.5), 1.0, 10)
