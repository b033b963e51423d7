"""The continuous Bernoulli, discretized logistic and calibrated Gaussian likelihoods against independent
computations: quadrature of the density over [0, 1], SciPy's logistic CDF over the 256 bins, the closed
form of the maximum-likelihood variance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import integrate, stats

import vae_lib
from vae_lib import distributions, likelihoods


@pytest.mark.parametrize("logit", [-30.0, -5.0, -0.3, -1e-3, 0.0, 1e-4, 0.05, 0.19, 0.21, 2.0, 12.0, 40.0])
def test_continuous_bernoulli_integrates_to_one_and_matches_its_mean(logit):
    log_lam, log_1m_lam = -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)  # float64

    def density(x):  # unnormalized lam^x (1 - lam)^(1 - x)
        return np.exp(x * log_lam + (1 - x) * log_1m_lam)

    z, _ = integrate.quad(density, 0.0, 1.0, epsabs=0, epsrel=1e-12)
    m, _ = integrate.quad(lambda x: x * density(x), 0.0, 1.0, epsabs=0, epsrel=1e-12)
    log_c = float(distributions.continuous_bernoulli_log_norm(jnp.float32(logit)))
    np.testing.assert_allclose(log_c, -np.log(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        float(distributions.continuous_bernoulli_mean(jnp.float32(logit))), m / z, atol=1e-6
    )
    # the density itself, at a few points, against the float64 formula
    x = jnp.linspace(0.0, 1.0, 7)[:, None]
    got = distributions.continuous_bernoulli_log_prob(x, jnp.float32(logit))
    np.testing.assert_allclose(
        got, np.log(density(np.asarray(x[:, 0], np.float64)) / z), rtol=1e-5, atol=2e-5
    )


def test_continuous_bernoulli_normalizer_is_smooth_and_has_finite_gradients_near_one_half():
    logits = jnp.linspace(-0.5, 0.5, 2001)
    log_c = distributions.continuous_bernoulli_log_norm(logits)
    t = np.abs(np.asarray(logits, np.float64)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.where(t > 0, np.log(2 * t / np.tanh(t)), np.log(2.0))
    np.testing.assert_allclose(log_c, exact, atol=1e-6)
    grads = jax.vmap(jax.grad(distributions.continuous_bernoulli_log_norm))(logits)
    assert np.all(np.isfinite(grads))
    np.testing.assert_allclose(grads, np.gradient(exact, np.asarray(logits, np.float64)), atol=2e-3)


@pytest.mark.parametrize(("mean", "log_s"), [(0.5, -3.0), (0.0, -5.0), (1.0, -5.0), (-0.4, -2.0), (0.3, 1.0)])
def test_discretized_logistic_bins_match_scipy_and_sum_to_one(mean, log_s):
    x = jnp.arange(256, dtype=jnp.float32)[:, None] / 255.0  # (256, 1): every grey level
    logp = distributions.discretized_logistic_log_prob(x, jnp.float32(mean), jnp.float32(2 * log_s))
    edges = np.concatenate([[-np.inf], (np.arange(255) + 0.5) / 255.0, [np.inf]])
    want = np.diff(stats.logistic.cdf(edges, loc=mean, scale=np.exp(log_s)))
    np.testing.assert_allclose(np.exp(logp), want, atol=2e-6, rtol=2e-4)
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(logp))), 1.0, atol=1e-5)
    got_mean = distributions.discretized_logistic_mean(jnp.float32(mean), jnp.float32(2 * log_s))
    np.testing.assert_allclose(float(got_mean), np.sum(want * np.arange(256) / 255.0), atol=1e-5)


def test_discretized_logistic_is_finite_at_the_edges_and_sharp_scales():
    x = jnp.array([0.0, 1.0, 128 / 255.0])
    for log_s in (-12.0, 0.0, 6.0):
        for mean in (-50.0, 0.5, 50.0):
            lp = distributions.discretized_logistic_log_prob(x, jnp.float32(mean), jnp.float32(2 * log_s))
            assert np.isfinite(float(lp)), (mean, log_s)
    # a sharp logistic on the right bin puts almost all the mass there
    lp = distributions.discretized_logistic_log_prob(x, x, jnp.float32(-24.0))
    np.testing.assert_allclose(float(lp), 0.0, atol=1e-4)
    g = jax.grad(lambda m: distributions.discretized_logistic_log_prob(x, m, jnp.full((3,), -24.0)))(x)
    assert np.all(np.isfinite(g))


def test_calibrated_gaussian_uses_the_maximum_likelihood_variance():
    x = jax.random.uniform(jax.random.key(0), (8, 5))
    mean = x + 0.1 * jax.random.normal(jax.random.key(1), (8, 5))
    got = vae_lib.log_likelihood(x, mean, "gaussian_calibrated")
    s2 = np.mean((np.asarray(x, np.float64) - np.asarray(mean, np.float64)) ** 2)
    want = stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.sqrt(s2)).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # the MSE is the best shared variance: any other one gives a lower total log-likelihood
    for factor in (0.8, 1.25):
        other = distributions.gaussian_log_prob(x, mean, jnp.log(factor * s2))
        assert float(jnp.sum(other)) < float(jnp.sum(got))
    # a perfect reconstruction stays finite (variance floor)
    assert np.isfinite(float(jnp.sum(vae_lib.log_likelihood(x, x, "gaussian_calibrated"))))


@pytest.mark.parametrize("name", ["continuous_bernoulli", "discretized_logistic", "gaussian_calibrated"])
def test_new_likelihoods_train_and_evaluate_through_the_registry(name):
    x = jnp.round(vae_lib.data.load_mnist5k().x_train[:256] * 255) / 255
    model = vae_lib.mlp_vae(784, 4, hidden=(32,), likelihood=name, rngs=nnx.Rngs(0))
    hist = vae_lib.fit(model, x, key=jax.random.key(0), epochs=2, batch_size=128, progress=False)
    assert np.all(np.isfinite(hist["train_elbo"]))
    ll = vae_lib.importance_log_likelihood(jax.random.key(1), model, x[:16], num_samples=4)
    assert ll.shape == (16,) and np.all(np.isfinite(ll))
    means = model.mean_of(model.decode(jnp.zeros((3, 4))))
    assert means.shape == (3, 784)
    if name != "gaussian_calibrated":
        assert np.all((means >= 0) & (means <= 1))


def test_unit_likelihoods_refuse_data_outside_the_unit_interval():
    model = vae_lib.mlp_vae(784, 2, hidden=(8,), likelihood="continuous_bernoulli", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae_lib.fit(model, jnp.full((16, 784), 255.0), key=jax.random.key(0), epochs=1, progress=False)
    assert "continuous_bernoulli" in likelihoods.LIKELIHOODS
