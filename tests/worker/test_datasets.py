"""Builtin datasets match what the API advertises (BUILTIN_DATASETS) and are deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from service.specs import BUILTIN_DATASETS
from service.store.artifacts import LocalArtifacts
from worker.datasets import load_builtin, load_dataset, load_uploaded


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_builtin_matches_its_advertised_shape(name):
    info = BUILTIN_DATASETS[name]
    data = load_builtin(name, seed=3)
    assert data.X.shape == (info.rows, info.features)
    assert data.y.shape == (info.rows,)
    assert np.isfinite(data.X).all() and np.isfinite(data.y).all()
    if info.task == "classification":
        assert np.issubdtype(data.y.dtype, np.integer)
        assert sorted(np.unique(data.y).tolist()) == info.classes
    else:
        assert np.issubdtype(data.y.dtype, np.floating)
    assert (data.X_val is not None) == info.has_validation
    if info.has_validation:
        assert data.X_val.shape == (info.val_rows, info.features)


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_builtin_is_deterministic_for_a_seed(name):
    a, b = load_builtin(name, seed=7), load_builtin(name, seed=7)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("name", ["moons", "circles", "sine"])
def test_generated_builtins_change_with_the_seed(name):
    assert not np.array_equal(load_builtin(name, seed=1).X, load_builtin(name, seed=2).X)


def test_xor_validates_on_its_four_points():
    data = load_builtin("xor", seed=0)
    np.testing.assert_array_equal(data.X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(data.y, [0, 1, 1, 0])
    np.testing.assert_array_equal(data.X_val, data.X)
    np.testing.assert_array_equal(data.y_val, data.y)


def test_sine_is_noisy_sine_on_minus_pi_to_pi():
    data = load_builtin("sine", seed=0)
    assert data.X.min() >= -np.pi and data.X.max() <= np.pi
    assert data.X.min() < -3.0 and data.X.max() > 3.0  # covers the interval
    residual = data.y - np.sin(data.X[:, 0])
    assert abs(residual.mean()) < 0.02 and 0.09 < residual.std() < 0.11


def test_circles_inner_ring_is_half_the_outer():
    data = load_builtin("circles", seed=0)
    radius = np.linalg.norm(data.X, axis=1)
    outer, inner = radius[data.y == 0].mean(), radius[data.y == 1].mean()
    assert inner / outer == pytest.approx(0.5, abs=0.05)


def test_unknown_builtin():
    with pytest.raises(ValueError, match="unknown builtin"):
        load_builtin("mnist", seed=0)


def test_uploaded_npz_with_validation(tmp_path):
    artifacts = LocalArtifacts(tmp_path)
    rng = np.random.default_rng(0)
    arrays = {"X": rng.normal(size=(10, 3)), "y": np.arange(10) % 2, "X_val": rng.normal(size=(4, 3)),
              "y_val": np.array([0, 1, 0, 1])}
    artifacts.write("datasets/d.npz", lambda file: np.savez_compressed(file, **arrays))
    data = load_dataset("f" * 32, "datasets/d.npz", 0, artifacts)
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(data, key), value)


def test_uploaded_npz_without_validation_or_with_missing_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((3, 2)), y=np.zeros(3))
    data = load_uploaded(path)
    assert data.X_val is None and data.y_val is None
    np.savez(path, X=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lacks y"):
        load_uploaded(path)


def test_uploaded_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.zeros((2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_uploaded(path)
