"""evaluate_elbo, importance_log_likelihood and quadrature_log_likelihood against independent truths.

Truths: the closed-form ``log p(x)`` of a linear-Gaussian model (``conftest.LinearGaussian``, built as a
``vae_lib`` MLP VAE with no hidden layer and hand-set weights); SciPy adaptive quadrature and
Gauss-Hermite quadrature for nonlinear Bernoulli decoders; ``elbo_per_example`` computed by hand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import integrate, special

import vae_lib
from vae_lib import evaluate_elbo, importance_log_likelihood, quadrature_log_likelihood
from vae_lib.evaluation import latent_grid

# --- quadrature -------------------------------------------------------------------------------------


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_quadrature_matches_the_closed_form_linear_gaussian(linear_gaussian, latent_dim):
    lg = linear_gaussian(seed=latent_dim, data_dim=8, latent_dim=latent_dim)
    model = lg.vae()
    x = lg.sample_x(seed=3, n=5)
    got = quadrature_log_likelihood(model, x)
    assert got.shape == (5,) and got.dtype == jnp.float32
    assert_allclose(got, lg.log_marginal(x), rtol=0, atol=1e-3)
    # a coarse grid is visibly worse: the test can tell a good quadrature from a bad one, and so can the
    # library's resolution check (which is silenced here to measure the error it warns about)
    with pytest.warns(vae_lib.evaluation.CoarseGridWarning):
        quadrature_log_likelihood(model, x, num_points=6)
    coarse = quadrature_log_likelihood(model, x, num_points=6, coarse_grid="ignore")
    assert np.max(np.abs(np.asarray(coarse) - lg.log_marginal(x))) > 1e-2


def _tanh_bernoulli_decoder(latent_dim: int, data_dim: int, seed: int) -> vae_lib.VAE:
    """An MLP VAE with a tanh hidden layer of 8 units (smooth, so Gauss-Hermite converges fast)."""
    return vae_lib.mlp_vae(data_dim, latent_dim, hidden=(8,), activation=jnp.tanh, rngs=nnx.Rngs(seed))


def _numpy_logits(model: vae_lib.VAE, z: np.ndarray) -> np.ndarray:
    """The decoder re-derived in NumPy from its weights: ``tanh(z K1 + b1) K2 + b2``."""
    dec = model.decoder
    (layer,) = dec.body.layers
    k1, b1 = np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)
    k2, b2 = np.asarray(dec.out.kernel[...], np.float64), np.asarray(dec.out.bias[...], np.float64)
    return np.tanh(z @ k1 + b1) @ k2 + b2


def _log_lik(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``log p(x|z)``: x (N, D), logits (G, D) -> (N, G), via log sigmoid."""
    return x @ -np.logaddexp(0, -logits).T + (1 - x) @ -np.logaddexp(0, logits).T


def test_quadrature_bernoulli_1d_matches_scipy_quad():
    model = _tanh_bernoulli_decoder(1, 12, seed=0)
    x = (np.random.default_rng(0).random((3, 12)) < 0.5).astype(np.float32)
    expected = []
    for row in x:

        def f(z, row=row):
            log_joint = _log_lik(row[None], _numpy_logits(model, np.array([[z]])))[0, 0] - 0.5 * z * z
            return math.exp(log_joint) / math.sqrt(2 * math.pi)

        expected.append(math.log(integrate.quad(f, -10, 10, epsabs=0, epsrel=1e-10, limit=200)[0]))
    assert_allclose(quadrature_log_likelihood(model, x), expected, rtol=0, atol=1e-3)


def test_quadrature_bernoulli_2d_matches_gauss_hermite():
    model = _tanh_bernoulli_decoder(2, 12, seed=1)
    x = (np.random.default_rng(1).random((4, 12)) < 0.5).astype(np.float32)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)  # integrates against exp(-z^2 / 2)
    z = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
    log_w = np.log(np.outer(weights, weights).reshape(-1) / (2 * np.pi))
    expected = special.logsumexp(_log_lik(x.astype(np.float64), _numpy_logits(model, z)) + log_w, axis=1)
    got = quadrature_log_likelihood(model, x)
    assert_allclose(got, expected, rtol=0, atol=1e-3)
    # the grid chunking does not change the result
    assert_allclose(quadrature_log_likelihood(model, x, grid_chunk=777), got, rtol=1e-6)


def test_latent_grid():
    z, log_cell = latent_grid(2, 4, 2.0)
    assert z.shape == (16, 2)
    assert_allclose(np.unique(np.asarray(z[:, 0])), [-1.5, -0.5, 0.5, 1.5])
    assert_allclose(log_cell, 2 * math.log(1.0))
    z1, log_cell1 = latent_grid(1, 5, 1.0)
    assert_allclose(np.asarray(z1)[:, 0], [-0.8, -0.4, 0.0, 0.4, 0.8], atol=1e-7)
    assert_allclose(log_cell1, math.log(0.4))


# --- importance sampling ----------------------------------------------------------------------------


def test_importance_log_likelihood_is_exact_with_the_exact_posterior(linear_gaussian):
    lg = linear_gaussian(seed=4, data_dim=8, latent_dim=2)
    model = lg.vae()
    x = lg.sample_x(seed=5, n=7)
    for k, chunk, batch in ((1, 100, 100), (30, 10, 3)):  # batch 3 pads 7 examples to 9
        got = importance_log_likelihood(
            jax.random.key(k), model, x, num_samples=k, sample_chunk=chunk, batch_size=batch
        )
        assert got.shape == (7,) and got.dtype == jnp.float32
        assert_allclose(got, lg.log_marginal(x), rtol=0, atol=2e-4)


def test_importance_log_likelihood_approaches_log_marginal_with_a_poor_encoder(linear_gaussian):
    lg = linear_gaussian(seed=4, data_dim=8, latent_dim=2)
    model = lg.vae(shift=0.8, var_factor=2.0)
    x = lg.sample_x(seed=6, n=200)
    log_px = lg.log_marginal(x)
    gaps = {}
    for k in (10, 1000):
        est = importance_log_likelihood(jax.random.key(k), model, x, num_samples=k, sample_chunk=min(k, 200))
        gap = log_px - np.asarray(est, np.float64)
        gaps[k] = (gap.mean(), gap.std(ddof=1) / math.sqrt(gap.size))
    (g10, se10), (g1000, se1000) = gaps[10], gaps[1000]
    assert g1000 > -4 * se1000  # a lower bound in expectation
    assert g10 - g1000 > 4 * math.hypot(se10, se1000), gaps
    assert g1000 < 0.05, gaps


def test_importance_log_likelihood_agrees_with_quadrature_for_a_bernoulli_model():
    model = _tanh_bernoulli_decoder(2, 12, seed=2)
    # q wider than the prior, so the weights p(x|z) p(z) / q(z|x) are bounded (an untrained encoder's
    # narrow q gives heavy-tailed weights, and estimates that overshoot log p(x) by 0.2 nats)
    model.encoder.logvar.kernel[...] = jnp.zeros_like(model.encoder.logvar.kernel[...])
    model.encoder.logvar.bias[...] = jnp.full_like(model.encoder.logvar.bias[...], math.log(1.5))
    x = (np.random.default_rng(2).random((20, 12)) < 0.5).astype(np.float32)
    exact = np.asarray(quadrature_log_likelihood(model, x), np.float64)
    est = np.asarray(
        importance_log_likelihood(jax.random.key(0), model, x, num_samples=2000, sample_chunk=500)
    )
    gap = exact - est  # per example: spread about 0.03 nats, bias about Var(w) / 2k, negligible
    assert np.max(np.abs(gap)) < 0.15, gap
    assert abs(gap.mean()) < 4 * gap.std(ddof=1) / math.sqrt(gap.size), gap


# --- evaluate_elbo ----------------------------------------------------------------------------------


def test_evaluate_elbo_at_the_exact_posterior_with_padding(linear_gaussian):
    lg = linear_gaussian(seed=7, data_dim=8, latent_dim=2)
    model = lg.vae()
    x = lg.sample_x(seed=8, n=10)
    # Monte Carlo KL at the exact posterior: every sample gives log p(x), whatever the key and chunking
    for batch_size in (10, 3):  # 3 pads the 10 examples to 12
        terms = evaluate_elbo(jax.random.key(batch_size), model, x, batch_size=batch_size, analytic_kl=False)
        assert_allclose(terms.elbo, lg.log_marginal(x).mean(), rtol=0, atol=1e-4)
        assert_allclose(terms.objective, terms.elbo)
        assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-6)
    # analytic KL: exact KL(q || p(z)) from the closed form, reconstruction unbiased
    mean, logvar = lg.posterior(x)
    terms = evaluate_elbo(jax.random.key(0), model, x, batch_size=3, num_samples=2000)
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1 - logvar, axis=-1)
    assert_allclose(terms.kl, kl.mean(), rtol=1e-5)
    assert_allclose(terms.elbo, lg.log_marginal(x).mean(), atol=0.02)


def test_evaluate_elbo_agrees_with_elbo_per_example_by_hand():
    model = vae_lib.mlp_vae(12, 2, hidden=(8,), rngs=nnx.Rngs(3))
    x = (np.random.default_rng(3).random((50, 12)) < 0.3).astype(np.float32)
    # by hand: 400 single-sample estimates per example give the mean and its standard error
    draws = jax.jit(
        jax.vmap(lambda k: vae_lib.elbo_per_example(k, jnp.asarray(x), model.encode, model.decode))
    )(jax.random.split(jax.random.key(1), 400))
    rec, kl = (np.asarray(a, np.float64) for a in draws)  # (400, 50) each
    assert np.all(kl == kl[:1])  # analytic KL: no randomness
    ref_rec = rec.mean()
    se_single = np.sqrt(np.mean(rec.var(axis=0, ddof=1)) / x.shape[0])  # SE of a 1-sample dataset mean
    se_ref = se_single / math.sqrt(400)
    # 100 samples per example, chunks of 16 (the 50 examples are padded to 64)
    evaluate = lambda key: evaluate_elbo(key, model, x, num_samples=100, batch_size=16)  # noqa: E731
    terms = evaluate(jax.random.key(2))
    assert all(t.shape == () for t in terms)
    assert_allclose(terms.kl, kl[0].mean(), rtol=1e-5)
    se = math.hypot(se_single / math.sqrt(100), se_ref)
    assert abs(float(terms.reconstruction) - ref_rec) < 4 * se
    assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-6)
    # the same key gives the same estimate, another key another one
    assert float(terms.elbo) == float(evaluate(jax.random.key(2)).elbo)
    assert float(terms.elbo) != float(evaluate(jax.random.key(3)).elbo)


# --- the quadrature's pairwise densities: the same densities, computed without cancellation -----------


def test_pairwise_gaussian_density_is_exact_at_large_offsets_and_small_variances():
    """The issue's case: decoder mean near 1000, log-variance -4. Expanding (x - m)^2 as x^2 - 2xm + m^2 in
    float32 gave 7.32 nats where the exact value is 0.344; the pairwise density must equal
    gaussian_log_prob of each pair (and a float64 NumPy value)."""
    from vae_lib.evaluation import _pairwise_log_likelihood

    rng = np.random.default_rng(0)
    for offset, logvar in ((1000.0, -4.0), (1e4, -8.0), (0.0, -12.0)):
        mean = (offset + rng.normal(size=(5, 3)) * 0.01).astype(np.float32)  # (G, D)
        x = (mean[rng.integers(0, 5, 4)] + rng.normal(size=(4, 3)) * 0.01).astype(np.float32)  # (N, D)
        lv = np.full_like(mean, logvar)
        got = np.asarray(
            _pairwise_log_likelihood(jnp.asarray(x), (jnp.asarray(mean), jnp.asarray(lv)), "gaussian")
        )
        each = np.asarray(vae_lib.gaussian_log_prob(x[:, None, :], mean[None], lv[None]))  # (N, G)
        x64, m64 = x.astype(np.float64)[:, None, :], mean.astype(np.float64)[None]
        exact = -0.5 * np.sum(np.log(2 * np.pi) + logvar + (x64 - m64) ** 2 * np.exp(-logvar), axis=-1)
        assert_allclose(got, each, rtol=1e-6)
        assert_allclose(got, exact, rtol=1e-5, atol=1e-3)


def test_pairwise_bernoulli_density_is_the_bernoulli_log_prob_of_every_pair():
    from vae_lib.evaluation import _pairwise_log_likelihood

    rng = np.random.default_rng(1)
    x = (rng.random((6, 20)) < 0.5).astype(np.float32)
    logits = (
        rng.normal(size=(7, 20)) * np.array([[1.0], [10.0], [100.0], [1e3], [1e4], [0.01], [30.0]])
    ).astype(np.float32)
    got = np.asarray(_pairwise_log_likelihood(jnp.asarray(x), jnp.asarray(logits), "bernoulli"))
    each = np.asarray(vae_lib.bernoulli_log_prob(x[:, None, :], logits[None]))
    stable = np.sum(
        x[:, None] * special.log_expit(logits[None].astype(np.float64))
        + (1 - x[:, None]) * special.log_expit(-logits[None].astype(np.float64)),
        axis=-1,
    )
    assert_allclose(got, each, rtol=1e-5, atol=1e-4)
    assert_allclose(got, stable, rtol=1e-5, atol=1e-3)


def test_quadrature_of_a_gaussian_model_far_from_the_origin(linear_gaussian):
    """The linear-Gaussian model moved to x near 1000 with a small noise variance: log p(x) is unchanged by
    the shift, and the quadrature still finds it (the expanded form was off by nats here)."""
    lg = linear_gaussian(seed=5, data_dim=4, latent_dim=2, s=0.05)
    x = lg.sample_x(seed=6, n=5)
    exact = lg.log_marginal(x)
    lg.b = lg.b + 1000.0
    model = lg.vae()
    got = quadrature_log_likelihood(model, x + 1000.0, num_points=600)
    assert_allclose(got, exact, rtol=0, atol=5e-3)
