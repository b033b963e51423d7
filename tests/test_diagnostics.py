"""vae_lib.diagnostics against independent computations: NumPy formulas, brute-force distances, and the
closed form of ELBO surgery for a linear-Gaussian encoder on Gaussian data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose

import vae_lib
from vae_lib import diagnostics


@pytest.fixture
def posterior():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(50, 4)).astype(np.float32) * np.array([1.0, 0.5, 0.05, 0.0], np.float32)
    logvar = rng.uniform(-2.0, 0.5, (50, 4)).astype(np.float32)
    return mean, logvar


def test_kl_per_dimension_matches_numpy_and_sums_to_the_kl(posterior):
    mean, logvar = posterior
    got = diagnostics.kl_per_dimension(mean, logvar)
    m, lv = mean.astype(np.float64), logvar.astype(np.float64)
    expected = (0.5 * (np.exp(lv) + m**2 - 1.0 - lv)).mean(axis=0)  # textbook formula, per dimension
    assert got.shape == (4,)
    assert_allclose(got, expected, rtol=1e-5)
    assert_allclose(float(got.sum()), float(vae_lib.kl_standard_normal(mean, logvar).mean()), rtol=1e-5)
    assert_allclose(jax.jit(diagnostics.kl_per_dimension)(mean, logvar), got, rtol=1e-6)


def test_active_units_is_the_variance_of_the_posterior_means(posterior):
    mean, _ = posterior  # per-dimension scales 1, 0.5, 0.05, 0: variances about 1, 0.25, 0.0025, 0
    count, activity = diagnostics.active_units(mean)
    assert_allclose(activity, np.var(mean.astype(np.float64), axis=0), rtol=1e-5)
    assert count == 2 and count == int(np.sum(np.var(mean, axis=0) > 0.01))
    assert diagnostics.active_units(mean, threshold=1e-3)[0] == 3


def test_encode_dataset_equals_the_encoder_in_one_call():
    model = vae_lib.mlp_vae(12, 3, hidden=(8,), rngs=nnx.Rngs(0))
    x = (np.random.default_rng(1).random((23, 12)) < 0.5).astype(np.float32)
    mean, logvar = diagnostics.encode_dataset(model, x, batch_size=5)  # 23 rows padded to 25
    ref_mean, ref_logvar = model.encode(jnp.asarray(x))
    assert mean.shape == logvar.shape == (23, 3)
    assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    assert_allclose(logvar, ref_logvar, rtol=1e-5, atol=1e-6)


def _gaussian_kl_to_standard(m: np.ndarray, cov: np.ndarray) -> float:
    """``KL(N(m, cov) || N(0, I))`` in closed form."""
    return 0.5 * float(np.trace(cov) + m @ m - len(m) - np.linalg.slogdet(cov)[1])


def test_elbo_surgery_matches_the_closed_form_of_a_linear_gaussian_encoder():
    """x ~ N(mu, Sigma) in 3-D; q(z|x) = N(A x + c, S) in 2-D. Then q(z) = N(A mu + c, A Sigma A^T + S),
    I(x; z) = 1/2 log det(A Sigma A^T + S) - 1/2 log det S, and KL(q(z) || p(z)) is a Gaussian KL."""
    rng = np.random.default_rng(2)
    n = 3000
    mu, L = np.array([0.3, -0.2, 0.5]), rng.normal(size=(3, 3)) * 0.6
    sigma = L @ L.T + 0.1 * np.eye(3)
    A, c, s = rng.normal(size=(2, 3)) * 0.8, np.array([0.2, -0.4]), np.array([0.3, 0.6])
    x = rng.multivariate_normal(mu, sigma, size=n)
    mean = (x @ A.T + c).astype(np.float32)
    logvar = np.broadcast_to(np.log(s), mean.shape).astype(np.float32)

    agg_cov = A @ sigma @ A.T + np.diag(s)
    info = 0.5 * (np.linalg.slogdet(agg_cov)[1] - np.sum(np.log(s)))
    marginal = _gaussian_kl_to_standard(A @ mu + c, agg_cov)
    kl = np.mean(0.5 * np.sum(s + mean.astype(np.float64) ** 2 - 1.0 - np.log(s), axis=1))

    got = diagnostics.elbo_surgery(jax.random.key(0), mean, logvar, num_samples=4)
    assert isinstance(got, diagnostics.ElboSurgery)
    assert_allclose(got.kl, kl, rtol=1e-5)
    # The data set's aggregate posterior is a mixture of n components; its information and KL differ from
    # the population's by O(1/n) (about 0.01 nats here) besides the Monte Carlo error.
    for est, se, truth in (
        (got.mutual_information, got.mutual_information_se, info),
        (got.marginal_kl, got.marginal_kl_se, marginal),
    ):
        assert 0 < float(se) < 0.05
        assert abs(float(est) - truth) < 4 * float(se) + 0.02, (float(est), truth, float(se))
    # the decomposition: the two Monte Carlo parts add up to the analytic KL within their error
    total_se = math.hypot(float(got.mutual_information_se), float(got.marginal_kl_se))
    assert abs(float(got.mutual_information + got.marginal_kl) - kl) < 4 * total_se + 0.02
    assert float(got.mutual_information) <= math.log(n)
    # the same key gives the same estimate
    again = diagnostics.elbo_surgery(jax.random.key(0), mean, logvar, num_samples=4)
    assert float(again.marginal_kl) == float(got.marginal_kl)


def test_elbo_surgery_of_identical_posteriors_has_no_information():
    """Every x has the same q(z|x) = N(m, s): I(x; z) = 0 and KL(q(z) || p(z)) = KL(q(z|x) || p(z))."""
    mean = np.tile(np.array([[0.5, -1.0]], np.float32), (40, 1))
    logvar = np.tile(np.array([[-0.5, 0.3]], np.float32), (40, 1))
    got = diagnostics.elbo_surgery(jax.random.key(1), mean, logvar)
    assert abs(float(got.mutual_information)) < 1e-5
    assert abs(float(got.marginal_kl) - float(got.kl)) < 4 * float(got.marginal_kl_se) + 1e-4


def _hole_fraction_brute_force(z_samples, z_train, z_test, quantile):
    """Chapter 1's definition with explicit pairwise norms."""
    near = lambda a: np.min(np.linalg.norm(a[:, None, :] - z_train[None], axis=-1), axis=1)  # noqa: E731
    radius = np.quantile(near(z_test), quantile)
    return float(np.mean(near(z_samples) > radius))


@pytest.mark.parametrize("quantile", [0.99, 0.5])
def test_hole_fraction_matches_a_brute_force_computation(quantile):
    rng = np.random.default_rng(3)
    z_train = rng.normal(size=(300, 2))
    z_test = rng.normal(size=(100, 2))
    z_samples = rng.uniform(-4, 4, size=(500, 2))  # a box much wider than the codes: many in holes
    got = diagnostics.hole_fraction(z_samples, z_train, z_test, quantile=quantile)
    assert got == _hole_fraction_brute_force(z_samples, z_train, z_test, quantile)
    assert 0.3 < got < 0.95
    # codes drawn like the training codes are rarely in a hole
    assert diagnostics.hole_fraction(rng.normal(size=(500, 2)), z_train, z_test) < 0.05
