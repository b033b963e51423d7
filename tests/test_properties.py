"""Property tests (hypothesis) and numerical safety of the log-variance parameterization.

Properties, each over ~50 random parameter sets (derandomized, so a run is repeatable):

- KL divergences are >= 0, vanish at equality and only there, and match their float64 closed forms;
- log-densities match SciPy over random parameters;
- ``E[IWAE_k] >= ELBO`` and ``E[IWAE_k] <= log p(x)`` on a 1-D linear-Gaussian model whose ``log p(x)`` and
  ELBO are closed form, with margins of 4.5 standard errors of the Monte Carlo means; ``E[IWAE_k]`` also
  matches an independent NumPy estimate;
- reparameterized samples have the requested mean and variance (within 5 standard errors).

Numerical safety: log-densities and KL stay finite and accurate for ``logvar`` in [-30, 30];
``bernoulli_log_prob`` is finite for logits of +-1e4 and accurate for probabilities near 0 and 1.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats

import vae_lib
from vae_lib import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_gaussians,
    kl_standard_normal,
    reparameterize,
    standard_normal_log_prob,
)

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


def _f32(*a):
    return tuple(np.asarray(x, np.float32) for x in a)


# --- KL divergences ----------------------------------------------------------------------------------


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


# --- log-densities against SciPy -----------------------------------------------------------------------


@FAST
@given(data=st.data(), d=DIMS)
def test_gaussian_log_prob_matches_scipy(data, d):
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
def test_bernoulli_log_prob_matches_scipy(data, d, binary):
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


# --- IWAE_k >= ELBO in expectation, on a 1-D linear-Gaussian model --------------------------------------


M_REPLICATES = 4000


@functools.partial(jax.jit, static_argnames="k")
def _linear_gaussian_bounds(key, xs, theta, *, k):
    """IWAE_k and ELBO estimates, shapes ``(B,)``, for ``p(z) = N(0, 1)``, ``p(x|z) = N(w z + b, s^2)`` with
    ``s = e^{log_s}``, and ``q(z|x) = N(a x + c, e^{q_logvar})``; ``theta = (w, b, log_s, a, c, q_logvar)``.
    Compiled once per ``k``, whatever the parameters."""
    w, b, log_s, a, c, q_logvar = theta

    def encode(xb):  # (B, 1) -> (B, 1), (B, 1)
        return a * xb + c, jnp.zeros_like(xb) + q_logvar

    def decode(z):  # (N, 1) -> mean, logvar (N, 1)
        return w * z + b, jnp.zeros_like(z) + 2 * log_s

    k1, k2 = jax.random.split(key)
    iwae = vae_lib.iwae_bound(k1, xs, encode, decode, num_samples=k, likelihood="gaussian")
    rec, kl = vae_lib.elbo_per_example(k2, xs, encode, decode, likelihood="gaussian")
    return iwae, rec - kl


def _se(v: np.ndarray) -> float:
    """Standard error of the mean of ``v``."""
    return float(v.std(ddof=1) / math.sqrt(v.size))


@FAST
@given(
    w=st.floats(0.5, 2.0),
    b=st.floats(-1.0, 1.0),
    log_s=st.floats(-1.0, 0.4),
    x=st.floats(-3.0, 3.0),
    a=st.floats(-1.0, 1.0),
    c=st.floats(-1.0, 1.0),
    q_logvar=st.floats(-2.0, 1.0),
    k=st.sampled_from([2, 8]),
    seed=st.integers(0, 2**16),
)
def test_iwae_bound_lies_between_elbo_and_log_likelihood(w, b, log_s, x, a, c, q_logvar, k, seed):
    """``log p(x) = log N(x; b, w^2 + s^2)``; any encoder ``q(z|x) = N(a x + c, e^{q_logvar})``."""
    w, b, log_s, x, a, c, q_logvar = (float(np.float32(v)) for v in (w, b, log_s, x, a, c, q_logvar))
    s2 = math.exp(2 * log_s)
    log_px = stats.norm.logpdf(x, b, math.sqrt(w * w + s2))
    q_mean, q_var = a * x + c, math.exp(q_logvar)
    # closed-form ELBO of this q: E_q log p(x|z) - KL(q || p(z))
    rec = -0.5 * (math.log(2 * math.pi * s2) + ((x - w * q_mean - b) ** 2 + w * w * q_var) / s2)
    elbo_exact = rec - 0.5 * (q_var + q_mean**2 - 1.0 - q_logvar)
    assume(elbo_exact > log_px - 8.0)  # keep the importance weights' variance moderate

    xs = np.full((M_REPLICATES, 1), x, np.float32)  # independent samples for each replicate
    theta = np.array([w, b, log_s, a, c, q_logvar], np.float32)
    bounds = _linear_gaussian_bounds(jax.random.key(seed), xs, theta, k=k)
    iwae, elbo = (np.asarray(v, np.float64) for v in bounds)

    assert abs(elbo.mean() - elbo_exact) <= 4.5 * _se(elbo) + 1e-4  # the ELBO estimate is unbiased
    assert iwae.mean() >= elbo.mean() - 4.5 * math.hypot(_se(iwae), _se(elbo))
    assert iwae.mean() >= elbo_exact - 4.5 * _se(iwae) - 1e-4
    assert iwae.mean() <= log_px + 4.5 * _se(iwae) + 1e-4

    # An independent float64 NumPy estimate of E[IWAE_k] with other samples agrees.
    rng = np.random.default_rng(seed)
    z = q_mean + math.sqrt(q_var) * rng.normal(size=(M_REPLICATES, k))
    log_w = (
        stats.norm.logpdf(x, w * z + b, math.sqrt(s2))
        + stats.norm.logpdf(z)
        - stats.norm.logpdf(z, q_mean, math.sqrt(q_var))
    )
    iwae_np = special.logsumexp(log_w, axis=1) - math.log(k)
    assert abs(iwae.mean() - iwae_np.mean()) <= 4.5 * math.hypot(_se(iwae), _se(iwae_np)) + 1e-4


def test_iwae_equals_log_likelihood_for_the_exact_posterior():
    """With q(z|x) = p(z|x) every importance weight equals p(x): IWAE_k = log p(x) for every sample."""
    w, b, log_s, x = 1.25, 0.25, -0.375, 1.125
    s2 = math.exp(2 * log_s)
    post_var = 1.0 / (1.0 + w * w / s2)
    a = post_var * w / s2  # posterior mean = a (x - b)
    log_px = stats.norm.logpdf(x, b, math.sqrt(w * w + s2))
    theta = np.array([w, b, log_s, a, -a * b, math.log(post_var)], np.float32)
    xs = np.full((M_REPLICATES, 1), x, np.float32)
    for k in (2, 8):
        iwae, elbo = _linear_gaussian_bounds(jax.random.key(k), xs, theta, k=k)
        np.testing.assert_allclose(iwae, log_px, atol=3e-5)
        elbo = np.asarray(elbo, np.float64)
        assert abs(elbo.mean() - log_px) <= 4.5 * _se(elbo) + 1e-4  # the ELBO is tight there, in expectation


# --- the reparameterization trick preserves moments --------------------------------------------------


N_SAMPLES = 20000


@FAST
@given(data=st.data(), d=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_reparameterize_preserves_mean_and_variance(data, d, seed):
    mean, logvar = data.draw(_vec(d, -5, 5)), data.draw(_vec(d, -6, 4))
    m32, l32 = _f32(mean, logvar)
    z = np.asarray(reparameterize(jax.random.key(seed), m32, l32, N_SAMPLES), np.float64)  # (N, d)
    assert z.shape == (N_SAMPLES, d)
    var = np.exp(l32.astype(np.float64))
    assert np.all(np.abs(z.mean(0) - m32) <= 5 * np.sqrt(var / N_SAMPLES))
    assert np.all(np.abs(z.var(0, ddof=1) - var) <= 5 * var * np.sqrt(2.0 / (N_SAMPLES - 1)))


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

    z = np.asarray(reparameterize(jax.random.key(0), np.zeros_like(lv), lv))
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize("logit", [1e4, -1e4, 88.0, -88.0, 200.0])
def test_bernoulli_log_prob_is_finite_for_huge_logits(logit):
    x = np.array([0.0, 1.0, 0.25], np.float32)
    logits = np.full(3, logit, np.float32)
    per_pixel = np.asarray(jax.vmap(lambda a, lg: bernoulli_log_prob(a[None], lg[None]))(x, logits))
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
