"""Data: the seed's generator re-derived in NumPy, the 2-D toys, the bundled digits and binarization."""

from __future__ import annotations

import hashlib
import math

import jax
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from vae_lib import data


def _seed_generate_data(num_samples, noise_level, seed, rounded=True):
    """The seed article's generator with ``np.random.default_rng(seed)`` for NumPy's global state:
    ``noise = normal(0, noise_level, (n, 2)); x = round(rand(n, 2) * 10 + noise)``."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, noise_level, (num_samples, 2))
    x = np.add(rng.random((num_samples, 2)) * 10, noise)
    return np.round(x) if rounded else x


@pytest.mark.parametrize("noise_level,seed", [(0.5, 0), (2.0, 7), (0.0, 3)])
def test_generate_data_matches_the_seed_code(noise_level, seed):
    x = data.generate_data(500, noise_level, seed=seed)
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert_array_equal(x, _seed_generate_data(500, noise_level, seed).astype(np.float32))
    assert_array_equal(x, np.round(x))  # on the integer lattice
    cont = data.generate_data(500, noise_level, seed=seed, rounded=False)
    assert cont.dtype == np.float32
    assert_allclose(cont, _seed_generate_data(500, noise_level, seed, rounded=False), rtol=1e-6)
    assert np.all(np.abs(cont - x) <= 0.5 + 1e-6)


def test_generate_data_statistics():
    # U[0, 10) + N(0, s^2): mean 5, variance 100/12 + s^2 per coordinate
    n, s = 20000, 1.0
    x = data.generate_data(n, s, seed=1, rounded=False).astype(np.float64)
    var = 100 / 12 + s**2
    assert np.all(np.abs(x.mean(0) - 5.0) < 4 * math.sqrt(var / n))
    assert np.all(np.abs(x.var(0) - var) < 0.05 * var)
    noiseless = data.generate_data(n, 0.0, seed=1, rounded=False)
    assert noiseless.min() >= 0 and noiseless.max() < 10
    assert not np.array_equal(data.generate_data(10, 1.0, seed=1), data.generate_data(10, 1.0, seed=2))


@pytest.mark.parametrize("name", data.TOYS)
def test_toy_2d_shape_scale_and_seeds(name):
    x = data.toy_2d(name, 2000, seed=0)
    assert x.shape == (2000, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert np.all(np.abs(x.mean(axis=0)) < 0.5)  # roughly centred
    assert np.all((x.std(axis=0) > 0.3) & (x.std(axis=0) < 2.0))  # roughly unit scale
    assert_array_equal(x, data.toy_2d(name, 2000, seed=0))
    assert not np.array_equal(x, data.toy_2d(name, 2000, seed=1))


def test_toy_2d_noiseless_geometry():
    r = np.linalg.norm(data.toy_2d("rings", 1000, noise=0.0), axis=1)
    assert_allclose(np.unique(np.round(r, 5)), [1 / 1.5, 2 / 1.5], rtol=1e-5)
    eight = data.toy_2d("eight_gaussians", 1000, noise=0.0).astype(np.float64)
    assert_allclose(np.linalg.norm(eight, axis=1), 2 / 1.5, rtol=1e-5)
    angles = np.round(np.degrees(np.arctan2(eight[:, 1], eight[:, 0])) % 360, 3)
    assert_allclose(np.unique(angles), np.arange(0, 360, 45), atol=1e-3)
    moons = data.toy_2d("two_moons", 1000, noise=0.0).astype(np.float64) * 0.75 + [0.5, 0.25]
    upper = np.isclose(np.linalg.norm(moons, axis=1), 1.0, atol=1e-5)
    lower = np.isclose(np.linalg.norm(moons - [1.0, 0.5], axis=1), 1.0, atol=1e-5)
    assert np.all(upper | lower) and 300 < upper.sum() < 700
    noisy = data.toy_2d("rings", 20000, noise=0.1, seed=3).astype(np.float64)
    # the added noise is N(0, 0.1^2): the radial residual has standard deviation about 0.1
    resid = np.min(np.abs(np.linalg.norm(noisy, axis=1)[:, None] - [1 / 1.5, 2 / 1.5]), axis=1)
    assert 0.07 < np.sqrt(np.mean(resid**2)) < 0.11


# --- the bundled digits -----------------------------------------------------------------------------


def _row_hashes(x: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in x]


def test_load_mnist5k_split(fast_mnist, _mnist_raw):
    split = data.load_mnist5k()
    assert isinstance(split, data.Split)
    assert split.x_train.shape == (4000, 784) and split.x_test.shape == (1000, 784)
    assert split.x_train.dtype == split.x_test.dtype == np.float32
    assert split.y_train.shape == (4000,) and split.y_test.shape == (1000,)
    assert split.y_train.dtype == split.y_test.dtype == np.int64
    assert split.x_train.min() == 0.0 and split.x_train.max() == 1.0
    assert_array_equal(np.bincount(split.y_train), np.full(10, 400))
    assert_array_equal(np.bincount(split.y_test), np.full(10, 100))
    # train and test are disjoint and together are the 5,000 digits, labels attached to their images
    train, test = _row_hashes(split.x_train), _row_hashes(split.x_test)
    assert not set(train) & set(test)
    raw_x, raw_y = _mnist_raw
    raw = dict(zip(_row_hashes((raw_x / 255.0).astype(np.float32)), raw_y, strict=True))
    assert len(raw) == 5000 and set(train) | set(test) == set(raw)
    assert all(
        raw[h] == y for h, y in zip(train + test, np.concatenate([split.y_train, split.y_test]), strict=True)
    )
    # the classes are shuffled, not in blocks
    assert len(set(split.y_train[:50])) > 5


def test_load_mnist5k_is_fixed_across_calls(fast_mnist):
    a, b = data.load_mnist5k(), data.load_mnist5k()
    for u, v in zip(a, b, strict=True):
        assert_array_equal(u, v)


def test_load_mnist5k_binarize_modes(fast_mnist):
    grey = data.load_mnist5k()
    thr = data.load_mnist5k(binarize_with="threshold")
    assert_array_equal(thr.x_train, (grey.x_train > 0.5).astype(np.float32))
    assert_array_equal(thr.y_train, grey.y_train)
    static = data.load_mnist5k(binarize_with="static")
    for x, g in ((static.x_train, grey.x_train), (static.x_test, grey.x_test), (thr.x_test, grey.x_test)):
        assert x.dtype == np.float32 and x.shape == g.shape
        assert set(np.unique(x)) <= {0.0, 1.0}
    # Bernoulli(x): the number of ones matches sum(x) within 4 standard errors sqrt(sum x (1 - x))
    g = grey.x_train.astype(np.float64)
    assert abs(static.x_train.sum() - g.sum()) < 4 * math.sqrt(np.sum(g * (1 - g)))
    assert np.all(static.x_train[grey.x_train == 0] == 0) and np.all(static.x_train[grey.x_train == 1] == 1)
    assert_array_equal(static.x_train, data.load_mnist5k(binarize_with="static").x_train)
    assert not np.array_equal(static.x_train, data.load_mnist5k(binarize_with="static", seed=1).x_train)


def test_binarize_mean_matches_probabilities():
    p = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    x = np.tile(p, (20000, 1))  # (n, 11)
    b = data.binarize(jax.random.key(0), x)
    assert b.shape == x.shape and b.dtype == np.float32
    assert set(np.unique(b)) <= {0.0, 1.0}
    se = np.sqrt(p * (1 - p) / x.shape[0])
    assert np.all(np.abs(b.mean(axis=0) - p) <= 4 * se)  # exact at p = 0 and 1
    assert_array_equal(b, data.binarize(jax.random.key(0), x))
    assert not np.array_equal(b, data.binarize(jax.random.key(1), x))
