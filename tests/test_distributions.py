"""Log-densities and KL divergences against SciPy, NumPy formulas, Monte Carlo and random parameters.

- Fixed cases, eagerly and under ``jax.jit``: values, shapes and dtypes against SciPy and NumPy.
- Properties (hypothesis, ~50 derandomized parameter sets each, so a run is repeatable): KL divergences
  are >= 0, vanish at equality and only there, and match their float64 closed forms; log-densities match
  SciPy over random parameters.
- Numerical safety: log-densities and KL stay finite and accurate for ``logvar`` in [-30, 30];
  ``bernoulli_log_prob`` is finite for logits of +-1e4 and accurate for probabilities near 0 and 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
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


# --- properties over random parameters (hypothesis) ------------------------------------------------

FAST = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DIMS = st.sampled_from([1, 3, 8])  # few distinct shapes: JAX compiles each eager op once per shape


def _vec(d: int, lo: float, hi: float):
    return hnp.arrays(np.float64, (d,), elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def _kl64(mq, lq, mp, lp) -> float:
    """``KL(N(mq, e^lq) || N(mp, e^lp))`` in float64, summed over dimensions."""
    return float(0.5 * np.sum(lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1.0))


@FAST
@given(data=st.data(), d=DIMS)
def test_kl_gaussians_is_nonnegative_and_zero_only_at_equality(data, d):
    mq, lq = data.draw(_vec(d, -3, 3)), data.draw(_vec(d, -3, 3))
    dm, dl = data.draw(_vec(d, -2, 2)), data.draw(_vec(d, -2, 2))
    mp, lp = mq + dm, lq + dl
    mq32, lq32, mp32, lp32 = _f32(mq, lq, mp, lp)
    kl = float(kl_gaussians(mq32, lq32, mp32, lp32))
    # the float64 reference, from the float32 inputs actually used
    ref = _kl64(*(a.astype(np.float64) for a in (mq32, lq32, mp32, lp32)))
    tol = 2e-6 * d * (1 + np.abs(lq).max() + np.abs(lp).max()) + 1e-5 * ref
    assert ref >= 0.0
    assert kl >= -tol
    assert abs(kl - ref) <= tol
    if ref > 10 * tol:  # p differs from q: strictly positive
        assert kl > 0.0
    assert abs(float(kl_gaussians(mq32, lq32, mq32, lq32))) <= 1e-6 * d * (1 + np.abs(lq).max())  # p == q


@FAST
@given(data=st.data(), d=DIMS)
def test_kl_standard_normal_is_nonnegative_and_zero_only_at_the_prior(data, d):
    mean, logvar = data.draw(_vec(d, -4, 4)), data.draw(_vec(d, -6, 6))
    m32, l32 = _f32(mean, logvar)
    kl = float(kl_standard_normal(m32, l32))
    ref = _kl64(m32.astype(np.float64), l32.astype(np.float64), 0.0, 0.0)
    tol = 2e-6 * d * (1 + np.abs(logvar).max()) + 1e-5 * ref
    assert kl >= -tol and abs(kl - ref) <= tol
    if ref > 10 * tol:
        assert kl > 0.0
    zeros = np.zeros(d, np.float32)
    assert float(kl_standard_normal(zeros, zeros)) == 0.0
    # the special case agrees with the general formula
    np.testing.assert_allclose(kl, float(kl_gaussians(m32, l32, zeros, zeros)), rtol=1e-6, atol=1e-6)


@FAST
@given(data=st.data(), d=DIMS)
def test_gaussian_log_prob_matches_scipy_over_random_parameters(data, d):
    x, mean = data.draw(_vec(d, -10, 10)), data.draw(_vec(d, -10, 10))
    logvar = data.draw(_vec(d, -8, 8))
    x, mean, logvar = (a.astype(np.float64) for a in _f32(x, mean, logvar))
    expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum()
    got = float(gaussian_log_prob(*_f32(x, mean, logvar)))
    assert math.isclose(got, expected, rel_tol=2e-6, abs_tol=1e-5 * d)
    expected_std = stats.norm.logpdf(x).sum()
    assert math.isclose(float(standard_normal_log_prob(*_f32(x))), expected_std, rel_tol=2e-6, abs_tol=1e-5)


@FAST
@given(data=st.data(), d=DIMS, binary=st.booleans())
def test_bernoulli_log_prob_matches_scipy_over_random_parameters(data, d, binary):
    logits = data.draw(_vec(d, -30, 30)).astype(np.float32).astype(np.float64)
    if binary:
        x = data.draw(hnp.arrays(np.float64, (d,), elements=st.sampled_from([0.0, 1.0])))
        moderate = np.all(np.abs(logits) < 15)  # where SciPy's log(1 - p) is itself accurate
        expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum() if moderate else None
    else:
        x = data.draw(_vec(d, 0, 1)).astype(np.float32).astype(np.float64)
        expected = None
    # the stable closed form, via SciPy's log_expit: x log sigmoid(l) + (1 - x) log sigmoid(-l)
    stable = float(np.sum(x * special.log_expit(logits) + (1 - x) * special.log_expit(-logits)))
    got = float(bernoulli_log_prob(*_f32(x, logits)))
    assert math.isclose(got, stable, rel_tol=2e-6, abs_tol=2e-5 * d)
    if expected is not None:
        assert math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-5 * d)


# --- numerical safety of the log-variance parameterization ------------------------------------------

LOGVARS = np.linspace(-30.0, 30.0, 61)  # (61,), every integer


def test_gaussian_log_prob_is_finite_and_accurate_for_extreme_logvar():
    x = np.float32(3.0) + np.zeros_like(LOGVARS, np.float32)  # |x - mean| = 10
    mean = np.full_like(x, -7.0)
    per_point = jax.vmap(lambda a, m, lv: gaussian_log_prob(a[None], m[None], lv[None]))
    got = np.asarray(per_point(x, mean, _f32(LOGVARS)[0]))
    expected = stats.norm.logpdf(10.0, 0.0, np.exp(0.5 * LOGVARS))  # float64; -5e14 at logvar = -30
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    grads = jax.grad(lambda lv: gaussian_log_prob(x, mean, lv))(_f32(LOGVARS)[0])
    assert np.all(np.isfinite(np.asarray(grads)))
    np.testing.assert_allclose(grads, -0.5 + 0.5 * 100.0 * np.exp(-LOGVARS), rtol=2e-6)


def test_kl_is_finite_and_accurate_for_extreme_logvar():
    lv = _f32(LOGVARS)[0]
    mean = np.full_like(lv, 2.0)
    kl = np.asarray(jax.vmap(lambda m, v: kl_standard_normal(m[None], v[None]))(mean, lv))
    expected = 0.5 * (np.exp(LOGVARS) + 4.0 - 1.0 - LOGVARS)
    assert np.all(np.isfinite(kl)) and np.all(kl > 0)
    np.testing.assert_allclose(kl, expected, rtol=2e-6)

    lq, lp = np.meshgrid(LOGVARS, LOGVARS, indexing="ij")  # every pair in [-30, 30]^2
    mq = np.full_like(lq, 1.0)
    args = _f32(mq[..., None], lq[..., None], np.zeros_like(mq)[..., None], lp[..., None])  # (61, 61, 1) each
    kl2 = np.asarray(kl_gaussians(*args))
    expected2 = 0.5 * (lp - lq + (np.exp(lq) + 1.0) / np.exp(lp) - 1.0)  # up to 5.8e25 at (30, -30)
    assert np.all(np.isfinite(kl2)) and np.all(kl2 >= 0)
    np.testing.assert_allclose(kl2, expected2, rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("logit", [1e4, -1e4, 88.0, -88.0, 200.0])
def test_bernoulli_log_prob_is_finite_for_huge_logits(logit, jit):
    x = np.array([0.0, 1.0, 0.25], np.float32)
    logits = np.full(3, logit, np.float32)
    per_pixel = jax.vmap(lambda a, lg: bernoulli_log_prob(a[None], lg[None]))
    per_pixel = np.asarray((jax.jit(per_pixel) if jit else per_pixel)(x, logits))
    expected = x * special.log_expit(logit) + (1 - x) * special.log_expit(-logit)  # e.g. [-1e4, 0, -7500]
    assert np.all(np.isfinite(per_pixel))
    np.testing.assert_allclose(per_pixel, expected, rtol=1e-6, atol=1e-30)
    grad = jax.grad(lambda lg: bernoulli_log_prob(x, lg))(logits)
    np.testing.assert_allclose(grad, x - special.expit(logit), atol=1e-6)  # finite, x - sigmoid(l)


@pytest.mark.parametrize("p", [1e-7, 1e-4, 0.5, 1 - 1e-4, 1 - 1e-7])
def test_bernoulli_log_prob_near_zero_and_one(p):
    logit = np.float32(special.logit(p))
    p32 = special.expit(np.float64(logit))  # the probability the float32 logit really encodes
    for x in (0.0, 1.0):
        got = float(bernoulli_log_prob(np.array([x], np.float32), np.array([logit])))
        expected = stats.bernoulli.logpmf(x, p32)
        assert np.isfinite(got)
        assert math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-9)
