"""Log-densities and KL divergences against SciPy, NumPy formulas and Monte Carlo estimates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import special, stats

from vae_lib import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_gaussians,
    kl_standard_normal,
    standard_normal_log_prob,
)

SHAPE = (3, 4, 5)  # two leading axes, event axis of 5


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)


def _f32(*arrays):
    return tuple(np.asarray(a, np.float32) for a in arrays)


@pytest.mark.parametrize("jit", [False, True])
def test_gaussian_log_prob_matches_scipy(jit, rng):
    x, mean = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    logvar = rng.uniform(-3.0, 2.0, SHAPE)
    expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum(axis=-1)
    fn = jax.jit(gaussian_log_prob) if jit else gaussian_log_prob
    got = fn(*_f32(x, mean, logvar))
    assert got.shape == SHAPE[:-1] and got.dtype == jnp.float32
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_log_prob_broadcasts_parameters_of_the_same_rank(rng):
    x = rng.normal(size=(6, 3))
    mean, logvar = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum(axis=-1)
    assert_allclose(gaussian_log_prob(*_f32(x, mean, logvar)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_standard_normal_log_prob_matches_scipy(jit, rng):
    z = 3.0 * rng.normal(size=SHAPE)
    fn = jax.jit(standard_normal_log_prob) if jit else standard_normal_log_prob
    got = fn(np.float32(z))
    assert got.shape == SHAPE[:-1] and got.dtype == jnp.float32
    assert_allclose(got, stats.norm.logpdf(z).sum(axis=-1), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_prob_matches_scipy(jit, rng):
    x = (rng.random(SHAPE) < 0.4).astype(np.float64)
    logits = rng.normal(0.0, 3.0, SHAPE)
    expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum(axis=-1)
    fn = jax.jit(bernoulli_log_prob) if jit else bernoulli_log_prob
    got = fn(*_f32(x, logits))
    assert got.shape == SHAPE[:-1] and got.dtype == jnp.float32
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_log_prob_is_exact_for_huge_logits(jit):
    # log sigmoid(l) = -log(1 + e^-l), log(1 - sigmoid(l)) = -log(1 + e^l): 0 or -1e4 here, never -inf/NaN.
    x = np.array([[1.0, 0.0, 1.0, 0.0]])
    logits = np.array([[1e4, 1e4, -1e4, -1e4]])
    per_pixel = np.where(x == 1, -np.logaddexp(0.0, -logits), -np.logaddexp(0.0, logits))
    assert_allclose(per_pixel, [[0.0, -1e4, -1e4, 0.0]])
    fn = jax.jit(bernoulli_log_prob) if jit else bernoulli_log_prob
    for cols in ([0], [1], [2], [3], [0, 1, 2, 3]):
        got = fn(*_f32(x[:, cols], logits[:, cols]))
        assert np.all(np.isfinite(got))
        assert_allclose(got, per_pixel[:, cols].sum(axis=-1), rtol=1e-6)
    # and the gradient is finite (sigmoid(l) - x)
    g = jax.grad(lambda lg: bernoulli_log_prob(jnp.asarray(x, jnp.float32), lg).sum())(jnp.float32(logits))
    assert_allclose(g, x - special.expit(logits), atol=1e-6)


def test_bernoulli_log_prob_with_grey_targets_is_the_cross_entropy(rng):
    x = rng.random((4, 6))
    logits = rng.normal(size=(4, 6))
    p = special.expit(logits)
    expected = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=-1)
    assert_allclose(bernoulli_log_prob(*_f32(x, logits)), expected, rtol=1e-5, atol=1e-5)


# --- KL divergences ---------------------------------------------------------------------------------


def _kl_numpy(mq, lvq, mp, lvp):
    """KL between diagonal Gaussians, written from the textbook formula in terms of variances."""
    vq, vp = np.exp(lvq), np.exp(lvp)
    return np.sum(np.log(np.sqrt(vp) / np.sqrt(vq)) + (vq + (mq - mp) ** 2) / (2 * vp) - 0.5, axis=-1)


@pytest.mark.parametrize("jit", [False, True])
def test_kl_standard_normal_matches_numpy(jit, rng):
    mean, logvar = rng.normal(size=SHAPE), rng.uniform(-4.0, 3.0, SHAPE)
    fn = jax.jit(kl_standard_normal) if jit else kl_standard_normal
    got = fn(*_f32(mean, logvar))
    assert got.shape == SHAPE[:-1] and got.dtype == jnp.float32
    expected = _kl_numpy(mean, logvar, 0.0, 0.0)
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(got) >= 0)


def test_kl_standard_normal_is_zero_only_at_the_prior():
    assert_allclose(kl_standard_normal(jnp.zeros((2, 3)), jnp.zeros((2, 3))), [0.0, 0.0], atol=0)
    assert float(kl_standard_normal(jnp.array([[1e-2]]), jnp.array([[0.0]]))[0]) > 0


@pytest.mark.parametrize("jit", [False, True])
def test_kl_gaussians_matches_numpy(jit, rng):
    mq, mp = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    lvq, lvp = rng.uniform(-3.0, 2.0, SHAPE), rng.uniform(-3.0, 2.0, SHAPE)
    fn = jax.jit(kl_gaussians) if jit else kl_gaussians
    got = fn(*_f32(mq, lvq, mp, lvp))
    assert got.shape == SHAPE[:-1] and got.dtype == jnp.float32
    assert_allclose(got, _kl_numpy(mq, lvq, mp, lvp), rtol=1e-5, atol=1e-5)


def test_kl_gaussians_special_cases(rng):
    mq, lvq = _f32(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)))
    zeros = np.zeros_like(mq)
    assert_allclose(kl_gaussians(mq, lvq, zeros, zeros), kl_standard_normal(mq, lvq), rtol=1e-6, atol=1e-6)
    assert_allclose(kl_gaussians(mq, lvq, mq, lvq), np.zeros(4), atol=1e-6)
    # not symmetric in general
    mp, lvp = _f32(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)))
    assert not np.allclose(kl_gaussians(mq, lvq, mp, lvp), kl_gaussians(mp, lvp, mq, lvq), rtol=1e-3)


def _mc_kl(seed, mq, lvq, mp, lvp, n):
    """Monte Carlo ``E_q[log q(z) - log p(z)]`` with SciPy densities; returns (estimate, standard error)."""
    z = mq + np.exp(0.5 * lvq) * np.random.default_rng(seed).normal(size=(n, mq.size))
    log_ratio = stats.norm.logpdf(z, mq, np.exp(0.5 * lvq)).sum(-1) - stats.norm.logpdf(
        z, mp, np.exp(0.5 * lvp)
    ).sum(-1)
    return log_ratio.mean(), log_ratio.std(ddof=1) / np.sqrt(n)


def test_kl_standard_normal_matches_monte_carlo():
    mean, logvar = np.array([0.7, -1.2, 0.1]), np.array([-0.5, 0.4, -1.5])
    estimate, se = _mc_kl(1, mean, logvar, np.zeros(3), np.zeros(3), 200_000)
    analytic = float(kl_standard_normal(*_f32(mean, logvar)))
    assert se < 0.01  # a meaningful check
    assert abs(analytic - estimate) < 4 * se, (analytic, estimate, se)


def test_kl_gaussians_matches_monte_carlo():
    mq, lvq = np.array([0.3, -0.8, 1.1, 0.0]), np.array([-0.3, 0.2, -1.0, 0.5])
    mp, lvp = np.array([-0.2, 0.5, 0.9, 0.4]), np.array([0.4, -0.1, -0.6, 0.8])
    estimate, se = _mc_kl(2, mq, lvq, mp, lvp, 200_000)
    analytic = float(kl_gaussians(*_f32(mq, lvq, mp, lvp)))
    assert se < 0.01
    assert abs(analytic - estimate) < 4 * se, (analytic, estimate, se)


def test_densities_keep_float64_under_x64(x64, rng):
    x = jnp.asarray(rng.normal(size=(2, 3)))
    assert x.dtype == jnp.float64
    assert gaussian_log_prob(x, x, x).dtype == jnp.float64
    assert kl_standard_normal(x, x).dtype == jnp.float64
    expected = stats.norm.logpdf(np.asarray(x)).sum(-1)
    assert_allclose(standard_normal_log_prob(x), expected, rtol=1e-13)
