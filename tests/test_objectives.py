"""reparameterize, the ELBO (with beta and free bits), the importance weights and the IWAE bound against
closed forms and Monte Carlo standard errors, plus properties over random parameters (hypothesis):
``E[IWAE_k] >= ELBO`` and ``E[IWAE_k] <= log p(x)`` on a 1-D linear-Gaussian model, and reparameterized
samples with the requested mean and variance.

Most checks use the linear-Gaussian model of ``conftest.LinearGaussian``, where ``log p(x)``, the exact
posterior and the ELBO of any diagonal Gaussian ``q`` are known in closed form. A Monte Carlo estimate
is compared with its truth within 4 standard errors, the standard error computed from the samples.
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
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, special, stats

import vae_lib
from vae_lib import elbo, elbo_per_example, iwae_bound, reparameterize


def _per_example(encode, decode, **kw):
    """``elbo_per_example`` with a Gaussian likelihood, jitted (one compilation instead of many ops)."""
    return jax.jit(lambda key, x: elbo_per_example(key, x, encode, decode, likelihood="gaussian", **kw))


def _iwae(encode, decode, k):
    return jax.jit(lambda key, x: iwae_bound(key, x, encode, decode, num_samples=k, likelihood="gaussian"))


def _mean_se(a, axis=None):
    a = np.asarray(a, np.float64)
    n = a.size if axis is None else a.shape[axis]
    return a.mean(axis=axis), a.std(axis=axis, ddof=1) / np.sqrt(n)


# --- reparameterize ---------------------------------------------------------------------------------

MEAN = np.array([0.5, -1.0, 2.0], np.float32)
LOGVAR = np.array([-1.0, 0.0, 0.7], np.float32)


def test_reparameterize_gradients_match_the_closed_form():
    # f(z) = z^2: E[f] = m^2 + exp(lv), so dE/dm = 2m and dE/dlv = exp(lv).
    n = 100_000
    key = jax.random.key(1)
    mean, logvar = jnp.asarray(MEAN), jnp.asarray(LOGVAR)
    f = lambda m, lv: reparameterize(key, m, lv, num_samples=n) ** 2  # noqa: E731  (n, 3)
    # Each z[:, j] depends on m[j], lv[j] only, so a JVP with ones gives the per-sample gradients.
    _, dm = jax.jvp(lambda m: f(m, logvar), (mean,), (jnp.ones(3),))
    _, dlv = jax.jvp(lambda lv: f(mean, lv), (logvar,), (jnp.ones(3),))
    for per_sample, exact in ((dm, 2 * MEAN), (dlv, np.exp(LOGVAR))):
        est, se = _mean_se(per_sample, axis=0)
        assert np.all(np.abs(est - exact) < 4 * se), (est, exact, se)
    # jax.grad of the sample mean is the mean of the per-sample gradients
    gm, glv = jax.grad(lambda m, lv: f(m, lv).mean(0).sum(), argnums=(0, 1))(mean, logvar)
    assert_allclose(gm, np.asarray(dm).mean(0), rtol=1e-4)
    assert_allclose(glv, np.asarray(dlv).mean(0), rtol=1e-4)


def test_reparameterize_keys_shapes_dtypes_and_jit():
    mean = jnp.asarray(np.tile(MEAN, (4, 1)))  # (4, 3)
    logvar = jnp.asarray(np.tile(LOGVAR, (4, 1)))
    k1, k2 = jax.random.split(jax.random.key(2))
    z = reparameterize(k1, mean, logvar)
    assert z.shape == (4, 3) and z.dtype == jnp.float32
    assert_array_equal(z, reparameterize(k1, mean, logvar))
    assert not np.allclose(z, reparameterize(k2, mean, logvar))
    zk = reparameterize(k1, mean, logvar, num_samples=5)
    assert zk.shape == (5, 4, 3)
    assert len({np.asarray(zk[i]).tobytes() for i in range(5)}) == 5  # the samples differ
    jitted = jax.jit(reparameterize, static_argnames="num_samples")
    assert_allclose(jitted(k1, mean, logvar), z, rtol=1e-6, atol=1e-6)
    assert_allclose(jitted(k1, mean, logvar, num_samples=5), zk, rtol=1e-6, atol=1e-6)
    # a tiny variance gives the mean
    assert_allclose(reparameterize(k1, mean, jnp.full_like(logvar, -40.0)), mean, rtol=0, atol=1e-7)


def test_reparameterize_keeps_float64(x64):
    z = reparameterize(jax.random.key(3), jnp.zeros((2, 3)), jnp.zeros((2, 3)), num_samples=4)
    assert z.dtype == jnp.float64 and z.shape == (4, 2, 3)


# --- the linear-Gaussian model: closed-form truth ---------------------------------------------------


@pytest.fixture
def lg(linear_gaussian):
    return linear_gaussian(seed=0, data_dim=8, latent_dim=2)


@pytest.fixture
def x(lg):
    return lg.sample_x(seed=1, n=6)  # (6, 8) float32


def test_linear_gaussian_closed_forms_are_consistent(lg, x):
    # a check of the test's own truth: the closed-form ELBO equals log p(x) at the exact posterior and
    # is below it elsewhere (the gap is KL(q || p(z|x)) > 0)
    mean, logvar = lg.posterior(x)
    assert_allclose(lg.elbo(x, mean, logvar), lg.log_marginal(x), rtol=1e-12)
    assert np.all(lg.elbo(x, mean + 0.3, logvar - 0.5) < lg.log_marginal(x) - 1e-3)
    # the posterior via Bayes' rule on a grid point: log p(z|x) = log p(x|z) + log p(z) - log p(x)
    z = mean[0] + 0.4
    log_joint = stats.norm.logpdf(x[0], lg.W @ z + lg.b, lg.s).sum() + stats.norm.logpdf(z).sum()
    log_post = stats.norm.logpdf(z, mean[0], np.exp(0.5 * logvar[0])).sum()
    assert_allclose(log_joint - lg.log_marginal(x[:1])[0], log_post, rtol=1e-10)


def test_elbo_at_the_exact_posterior_equals_log_marginal_for_any_key(lg, x, x64):
    x = jnp.asarray(x, jnp.float64)
    log_px = lg.log_marginal(x)
    encode = lg.exact_encoder()
    terms = _per_example(encode, lg.decode, analytic_kl=False)
    iwae = {k: _iwae(encode, lg.decode, k) for k in (1, 7)}
    for seed in range(4):
        key = jax.random.key(seed)
        # with the Monte Carlo KL, log p(x|z) + log p(z) - log q(z|x) = log p(x) for every z
        rec, kl = terms(key, x)
        assert rec.shape == kl.shape == (6,) and rec.dtype == jnp.float64
        assert_allclose(rec - kl, log_px, rtol=1e-10)
        for fn in iwae.values():
            iw = fn(key, x)
            assert iw.shape == (6,)
            assert_allclose(iw, log_px, rtol=1e-10)


def test_analytic_kl_elbo_at_the_exact_posterior_is_unbiased(lg, x):
    # with the analytic KL only the reconstruction term is random; its mean is log p(x) + KL
    reps = 4000
    xr = np.repeat(x, reps, axis=0)  # independent samples of z for each copy
    rec, kl = _per_example(lg.exact_encoder(), lg.decode)(jax.random.key(4), xr)
    est, se = _mean_se(np.asarray(rec - kl).reshape(6, reps), axis=1)
    assert np.all(np.abs(est - lg.log_marginal(x)) < 4 * se), (est, lg.log_marginal(x), se)


def _random_q_encoder(seed, latent_dim):
    """An encoder that ignores x: a fixed random diagonal Gaussian for every example."""
    rng = np.random.default_rng(seed)
    mean, logvar = rng.normal(size=(1, latent_dim)), rng.uniform(-2.0, 1.0, (1, latent_dim))
    return lambda x: tuple(
        jnp.broadcast_to(jnp.asarray(a, x.dtype), (x.shape[0], latent_dim)) for a in (mean, logvar)
    )


@pytest.mark.parametrize("which", ["shifted posterior", "random q"])
def test_elbo_of_any_q_matches_the_closed_form_and_is_below_log_marginal(lg, x, which):
    reps = 4000
    if which == "random q":
        encode = _random_q_encoder(12, lg.latent_dim)
    else:
        encode = lg.poor_encoder(shift=0.5, var_factor=2.0)
    xr = np.repeat(x, reps, axis=0)
    rec, kl = _per_example(encode, lg.decode)(jax.random.key(5), xr)
    est, se = _mean_se(np.asarray(rec - kl).reshape(6, reps), axis=1)
    mean, logvar = (np.asarray(a) for a in encode(jnp.asarray(x)))
    exact = lg.elbo(x, mean, logvar)
    assert np.all(np.abs(est - exact) < 4 * se), (est, exact, se)
    # the estimate lies below log p(x) by more than its Monte Carlo error
    assert np.all(est + 4 * se < lg.log_marginal(x))


def test_monte_carlo_kl_agrees_with_the_analytic_kl(lg, x):
    reps = 4000
    encode = lg.poor_encoder(shift=0.3, var_factor=1.5)
    xr = np.repeat(x, reps, axis=0)
    key = jax.random.key(6)
    rec_a, kl_a = _per_example(encode, lg.decode)(key, xr)
    rec_m, kl_m = _per_example(encode, lg.decode, analytic_kl=False)(key, xr)
    assert_allclose(rec_a, rec_m, rtol=1e-5)  # same key, same samples of z
    diff, se = _mean_se(np.asarray(kl_m - kl_a).reshape(6, reps), axis=1)
    assert np.all(np.abs(diff) < 4 * se), (diff, se)
    assert np.all(se > 0)
    # and the batch means of elbo() agree within the standard error of all copies together
    batch = jax.jit(
        lambda key, x, analytic_kl: elbo(
            key, x, encode, lg.decode, likelihood="gaussian", analytic_kl=analytic_kl
        ),
        static_argnums=2,
    )
    _, se_all = _mean_se(kl_m - kl_a)
    assert abs(float(batch(key, xr, True).elbo) - float(batch(key, xr, False).elbo)) < 4 * se_all


def test_iwae_bound_rises_with_k_towards_log_marginal(lg, x):
    reps, n = 1000, 3
    encode = lg.poor_encoder(shift=0.8, var_factor=2.0)  # gaps about 4.7, 0.9, 0.12, 0.014 nats
    xr = np.repeat(x[:n], reps, axis=0)  # (n * reps, D): independent draws for every copy
    log_px = lg.log_marginal(x[:n])[:, None]  # (n, 1)
    gaps, ses = [], []
    for i, k in enumerate((1, 10, 100, 1000)):
        iw = np.asarray(_iwae(encode, lg.decode, k)(jax.random.key(100 + i), xr), np.float64)
        gap, se = _mean_se(log_px - iw.reshape(n, reps), axis=1)  # per example
        gaps.append(gap.mean())
        ses.append(np.sqrt(np.sum(se**2)) / n)
    gaps, ses = np.array(gaps), np.array(ses)
    # E[log p(x) - IWAE_k] >= 0 and falls with k; each step is larger than 4 joint standard errors
    assert np.all(gaps > -4 * ses), (gaps, ses)
    assert np.all(np.diff(gaps) < -4 * np.hypot(ses[1:], ses[:-1])), (gaps, ses)
    assert gaps[-1] < 0.02 * gaps[0], gaps


def test_iwae_with_one_sample_is_the_monte_carlo_kl_elbo(lg, x):
    key = jax.random.key(7)
    encode = lg.poor_encoder()
    rec, kl = elbo_per_example(key, x, encode, lg.decode, likelihood="gaussian", analytic_kl=False)
    iw = iwae_bound(key, x, encode, lg.decode, num_samples=1, likelihood="gaussian")
    assert_allclose(iw, rec - kl, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0, 3.0])
def test_beta_weights_only_the_objective(lg, x, beta):
    key = jax.random.key(8)
    encode = lg.poor_encoder()
    terms = elbo(key, x, encode, lg.decode, likelihood="gaussian", beta=beta)
    rec, kl = elbo_per_example(key, x, encode, lg.decode, likelihood="gaussian")
    assert isinstance(terms, vae_lib.ElboTerms)
    assert all(t.shape == () for t in terms)
    assert_allclose(terms.reconstruction, rec.mean(), rtol=1e-6)
    assert_allclose(terms.kl, kl.mean(), rtol=1e-6)
    assert_allclose(terms.elbo, rec.mean() - kl.mean(), rtol=1e-6)
    assert_allclose(terms.objective, rec.mean() - beta * kl.mean(), rtol=1e-6)
    assert float(kl.mean()) > 0.1  # so the beta weighting is visible


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_free_bits_floor_the_batch_mean_kl_of_each_dimension(lg, x, beta):
    """objective = rec - beta * sum_j max(lam, mean_b KL_bj); elbo, reconstruction and kl stay true."""
    key = jax.random.key(12)
    encode = lg.poor_encoder(shift=0.4, var_factor=3.0)
    mean, logvar = (np.asarray(a, np.float64) for a in encode(jnp.asarray(x)))
    kl_bj = 0.5 * (np.exp(logvar) + mean**2 - 1.0 - logvar)  # (B, Z), NumPy
    lam = float(np.mean(kl_bj.mean(axis=0)))  # one dimension below the floor, one above
    assert kl_bj.mean(axis=0).min() < lam < kl_bj.mean(axis=0).max()
    fn = lambda key, x, lam: elbo(key, x, encode, lg.decode, likelihood="gaussian", beta=beta, free_bits=lam)  # noqa: E731
    terms, jitted = fn(key, x, lam), jax.jit(fn)(key, x, jnp.float32(lam))
    plain = elbo(key, x, encode, lg.decode, likelihood="gaussian")
    for a, b in zip(jitted, terms, strict=True):
        assert_allclose(a, b, rtol=1e-5)
    assert_allclose(terms.kl, kl_bj.sum(axis=1).mean(), rtol=1e-5)
    assert_allclose(terms.elbo, plain.elbo, rtol=1e-6)
    expected = float(terms.reconstruction) - beta * np.sum(np.maximum(lam, kl_bj.mean(axis=0)))
    assert_allclose(terms.objective, expected, rtol=1e-5)
    # a floor of 0 changes nothing
    assert_allclose(
        fn(key, x, 0.0).objective,
        elbo(key, x, encode, lg.decode, likelihood="gaussian", beta=beta).objective,
        rtol=1e-6,
    )


def test_log_importance_weights_are_the_joint_over_the_proposal(lg, x):
    """log w = log p(x|z) + log p(z) - log q(z|x), recomputed with SciPy at the same samples of z."""
    key = jax.random.key(13)
    encode = lg.poor_encoder()
    log_w = np.asarray(
        vae_lib.log_importance_weights(key, x, encode, lg.decode, num_samples=4, likelihood="gaussian")
    )
    mean, logvar = (np.asarray(a, np.float64) for a in encode(jnp.asarray(x)))
    z = np.asarray(reparameterize(key, *encode(jnp.asarray(x)), 4), np.float64)  # the same draws: (4, B, Z)
    expected = (
        stats.norm.logpdf(x.astype(np.float64), z @ lg.W.T + lg.b, lg.s).sum(-1)
        + stats.norm.logpdf(z).sum(-1)
        - stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
    )
    assert log_w.shape == (4, 6)
    assert_allclose(log_w, expected, rtol=1e-4, atol=1e-4)
    iw = iwae_bound(key, x, encode, lg.decode, num_samples=4, likelihood="gaussian")
    assert_allclose(iw, special.logsumexp(expected, axis=0) - np.log(4), rtol=1e-4, atol=1e-4)
    a = np.random.default_rng(0).normal(size=(5, 3)) * 50
    assert_allclose(
        vae_lib.log_mean_exp(jnp.asarray(a, jnp.float32)), special.logsumexp(a, axis=0) - np.log(5), rtol=1e-5
    )


def test_elbo_jit_equals_eager_and_keys(lg, x):
    encode = lg.poor_encoder()
    fn = lambda key, x: elbo(key, x, encode, lg.decode, likelihood="gaussian", num_samples=3)  # noqa: E731
    k1, k2 = jax.random.split(jax.random.key(9))
    eager = fn(k1, x)
    for a, b in zip(jax.jit(fn)(k1, x), eager, strict=True):
        assert_allclose(a, b, rtol=1e-5)
    assert_array_equal(fn(k1, x).elbo, eager.elbo)
    assert float(fn(k2, x).reconstruction) != float(eager.reconstruction)
    assert float(fn(k2, x).kl) == float(eager.kl)  # analytic KL does not depend on the key


def test_bernoulli_reconstruction_matches_quadrature():
    # 1-D latent, Bernoulli decoder with logits w * z + c: E_q[log p(x|z)] by adaptive quadrature
    w, c = np.array([1.5, -2.0, 0.7]), np.array([0.2, 0.5, -1.0])
    x = np.array([[1.0, 0.0, 1.0]], np.float32)
    m, lv = 0.3, -0.8

    def integrand(z):
        p = special.expit(w * z + c)
        return stats.bernoulli.logpmf(x[0], p).sum() * stats.norm.pdf(z, m, np.exp(0.5 * lv))

    sd = np.exp(0.5 * lv)
    exact = integrate.quad(integrand, m - 12 * sd, m + 12 * sd, epsabs=1e-12, epsrel=1e-12)[0]
    reps = 20000
    xr = np.repeat(x, reps, axis=0)
    encode = lambda x: (jnp.full((x.shape[0], 1), m), jnp.full((x.shape[0], 1), lv))  # noqa: E731
    decode = lambda z: z * jnp.asarray(w[None], jnp.float32) + jnp.asarray(c[None], jnp.float32)  # noqa: E731
    rec, kl = jax.jit(lambda key, x: elbo_per_example(key, x, encode, decode))(jax.random.key(10), xr)
    est, se = _mean_se(rec)
    assert abs(est - exact) < 4 * se, (est, exact, se)
    assert_allclose(kl, 0.5 * (np.exp(lv) + m**2 - 1 - lv), rtol=1e-5)


def test_log_likelihood_gaussian_with_sample_axis_matches_scipy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    mean = rng.normal(size=(5, 3, 4)).astype(np.float32)
    logvar = rng.normal(size=(5, 3, 4)).astype(np.float32)
    got = vae_lib.log_likelihood(jnp.broadcast_to(x, (5, 3, 4)), (mean, logvar), "gaussian")
    assert got.shape == (5, 3)
    assert_allclose(got, stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum(-1), rtol=1e-5)


# --- properties over random parameters (hypothesis, derandomized) ---------------------------------------

FAST = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _vec(d: int, lo: float, hi: float):
    return hnp.arrays(np.float64, (d,), elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def _f32(*a):
    return tuple(np.asarray(x, np.float32) for x in a)


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


# the reparameterization trick preserves moments --------------------------------------------------


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
