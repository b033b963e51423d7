"""Learned priors (``vae_lib.priors``) and the prior hook of ``VAE``, the objectives, ``fit``, evaluation and
``elbo_surgery``, each against an independent computation:

- the mixture log-density against SciPy in float64, and its normalization by quadrature in 1-D;
- samples against the mixture's weights, mean and variance (within 4 standard errors);
- a one-component mixture fixed at ``N(0, I)`` gives the same numbers as the standard-normal prior: the
  Monte Carlo KL, the ELBO, the importance weights, the test log-likelihood and the quadrature;
- with the closed-form linear-Gaussian model, the Monte Carlo KL against a mixture prior averages to the
  value computed independently with NumPy and SciPy;
- ``fit`` moves the prior's parameters, and the learned-prior ELBO it reports is the one ``evaluate_elbo``
  computes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import integrate, special, stats

import vae_lib
from vae_lib import priors
from vae_lib.diagnostics import elbo_surgery
from vae_lib.distributions import standard_normal_log_prob


def _scipy_mixture(z, log_w, means, logvars):
    """``log sum_k w_k N(z; m_k, diag(exp(v_k)))`` in float64 with SciPy, ``z (N, Z) -> (N,)``."""
    comps = np.stack(
        [
            stats.multivariate_normal(m, np.diag(np.exp(v))).logpdf(np.asarray(z, np.float64))
            for m, v in zip(np.asarray(means, np.float64), np.asarray(logvars, np.float64), strict=True)
        ],
        axis=-1,
    )  # (N, K)
    return special.logsumexp(comps + np.asarray(log_w, np.float64), axis=-1)


def _prior(latent_dim=3, k=4, seed=0):
    """A MixturePrior with unequal weights and spread variances (set by hand, not left at the init)."""
    p = priors.MixturePrior(latent_dim, k, init_scale=1.5, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    p.logits[...] = jnp.asarray(rng.normal(size=k), jnp.float32)
    p.logvars[...] = jnp.asarray(rng.uniform(-1.0, 0.5, size=(k, latent_dim)), jnp.float32)
    return p


def _standard_normal_prior(latent_dim):
    """One component at N(0, I): the same density as the default prior."""
    return priors.MixturePrior(latent_dim, 1, init_scale=0.0, rngs=nnx.Rngs(0))


# --- the mixture density ------------------------------------------------------------------------------


def test_mixture_log_prob_matches_scipy_eagerly_and_under_jit():
    p = _prior()
    z = jax.random.normal(jax.random.key(1), (50, 3)) * 2.0
    expected = _scipy_mixture(z, jax.nn.log_softmax(p.logits[...]), p.means[...], p.logvars[...])
    assert_allclose(p.log_prob(z), expected, rtol=1e-5, atol=1e-5)
    assert_allclose(nnx.jit(lambda m, z: m.log_prob(z))(p, z), expected, rtol=1e-5, atol=1e-5)


def test_mixture_log_prob_keeps_every_leading_axis():
    p = _prior()
    z = jax.random.normal(jax.random.key(2), (5, 7, 3))  # (K samples, B, Z)
    out = p.log_prob(z)
    assert out.shape == (5, 7)
    assert_allclose(out[2], p.log_prob(z[2]), rtol=1e-6)
    assert p.log_prob(z[0, 0]).shape == ()
    with pytest.raises(ValueError, match="latent size 3"):
        p.log_prob(jnp.zeros((4, 2)))  # Z = 2 against a 3-D prior


def test_mixture_density_integrates_to_one_in_1d():
    p = _prior(latent_dim=1, k=3)
    f = lambda t: float(jnp.exp(p.log_prob(jnp.array([t], jnp.float32))))  # noqa: E731
    total, err = integrate.quad(f, -30.0, 30.0, limit=200)
    assert abs(total - 1.0) < 1e-5, (total, err)


def test_mixture_samples_have_the_mixture_weights_mean_and_variance():
    p = _prior()
    n = 200_000
    z = np.asarray(p.sample(jax.random.key(3), n), np.float64)
    w = np.asarray(jax.nn.softmax(p.logits[...]), np.float64)
    m, v = np.asarray(p.means[...], np.float64), np.exp(np.asarray(p.logvars[...], np.float64))
    mean = w @ m  # (Z,)
    var = w @ (v + m**2) - mean**2
    assert np.all(np.abs(z.mean(0) - mean) < 4 * np.sqrt(var / n))
    # the variance's standard error from the sample's fourth central moment
    c = z - z.mean(0)
    se_var = np.sqrt(((c**2 - c.var(0)) ** 2).mean(0) / n)
    assert np.all(np.abs(c.var(0) - var) < 4 * se_var)
    # component frequencies: the nearest component in log-density is not the label, so check weights via
    # the sampler's own categorical draw (same key split as in sample)
    k_comp, _ = jax.random.split(jax.random.key(3))
    comp = np.asarray(jax.random.categorical(k_comp, p.logits[...], shape=(n,)))
    freq = np.bincount(comp, minlength=len(w)) / n
    assert np.all(np.abs(freq - w) < 4 * np.sqrt(w * (1 - w) / n))


def test_sample_same_key_same_draws_different_key_different():
    p = _prior()
    a, b = p.sample(jax.random.key(0), 10), p.sample(jax.random.key(0), 10)
    c = p.sample(jax.random.key(1), 10)
    assert a.shape == (10, 3)
    assert_allclose(a, b)
    assert not np.allclose(a, c)


def test_bad_arguments_are_refused_with_their_names():
    with pytest.raises(ValueError, match="num_components"):
        priors.MixturePrior(3, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_samples"):
        _prior().sample(jax.random.key(0), 0)
    enc = vae_lib.MLPEncoder(4, 2, hidden=(), rngs=nnx.Rngs(0))
    dec = vae_lib.MLPDecoder(2, 4, hidden=(), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="prior"):
        vae_lib.VAE(enc, dec, prior=standard_normal_log_prob)  # a function, not a module with log_prob


# --- a one-component N(0, I) mixture equals the default prior -----------------------------------------


def test_standard_normal_mixture_gives_the_default_priors_mc_kl_elbo_and_weights(linear_gaussian):
    lg = linear_gaussian(0, data_dim=6, latent_dim=3)
    x = jnp.asarray(lg.sample_x(1, 32))
    encode, log_prior = lg.poor_encoder(), _standard_normal_prior(3).log_prob
    key = jax.random.key(4)
    kw = dict(likelihood="gaussian", num_samples=5)
    default = jax.jit(lambda k, x: vae_lib.elbo_per_example(k, x, encode, lg.decode, analytic_kl=False, **kw))
    learned = jax.jit(
        lambda k, x: vae_lib.elbo_per_example(k, x, encode, lg.decode, log_prior=log_prior, **kw)
    )
    for a, b in zip(default(key, x), learned(key, x), strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-4)  # the same z, the same log p(z)
    t_default = vae_lib.elbo(key, x, encode, lg.decode, analytic_kl=False, beta=0.5, **kw)
    t_learned = vae_lib.elbo(key, x, encode, lg.decode, log_prior=log_prior, beta=0.5, **kw)
    for a, b in zip(t_default, t_learned, strict=True):
        assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    w_default = vae_lib.log_importance_weights(
        key, x, encode, lg.decode, num_samples=7, likelihood="gaussian"
    )
    w_learned = vae_lib.log_importance_weights(
        key, x, encode, lg.decode, num_samples=7, likelihood="gaussian", log_prior=log_prior
    )
    assert_allclose(w_default, w_learned, rtol=1e-5, atol=1e-4)


def test_mc_kl_against_a_mixture_prior_matches_an_independent_computation(linear_gaussian):
    # E_q[log q(z|x) - log p(z)] for one x: closed-form entropy of q, plus E_q[-log p(z)] by a large
    # NumPy/SciPy Monte Carlo with its own draws; the library's estimate, averaged over many keys, agrees.
    lg = linear_gaussian(2, data_dim=5, latent_dim=3)
    x = jnp.asarray(lg.sample_x(3, 1))
    encode = lg.poor_encoder()
    mean, logvar = (np.asarray(a, np.float64)[0] for a in encode(x))
    p = _prior(latent_dim=3)
    log_w, means, logvars = jax.nn.log_softmax(p.logits[...]), p.means[...], p.logvars[...]
    rng = np.random.default_rng(5)
    z = mean + np.exp(0.5 * logvar) * rng.normal(size=(200_000, 3))
    neg_entropy = -0.5 * np.sum(1.0 + math.log(2 * math.pi) + logvar)
    cross = -_scipy_mixture(z, log_w, means, logvars)
    expected, expected_se = neg_entropy + cross.mean(), cross.std() / math.sqrt(cross.size)

    f = jax.jit(
        lambda k: vae_lib.elbo_per_example(
            k, x, encode, lg.decode, likelihood="gaussian", num_samples=1000, log_prior=p.log_prob
        )[1][0]
    )
    kls = np.array([float(f(k)) for k in jax.random.split(jax.random.key(6), 40)])
    got, got_se = kls.mean(), kls.std(ddof=1) / math.sqrt(kls.size)
    assert abs(got - expected) < 4 * math.hypot(got_se, expected_se) + 1e-3, (got, expected)


def test_free_bits_need_the_standard_normal_prior(linear_gaussian):
    lg = linear_gaussian(0, data_dim=4, latent_dim=2)
    x = jnp.asarray(lg.sample_x(1, 8))
    with pytest.raises(ValueError, match="free_bits"):
        vae_lib.elbo(
            jax.random.key(0),
            x,
            lg.exact_encoder(),
            lg.decode,
            likelihood="gaussian",
            free_bits=0.5,
            log_prior=_standard_normal_prior(2).log_prob,
        )


# --- the model: VAE(prior=...), evaluation, sampling, fit ----------------------------------------------


def _with_prior(model, prior):
    """The same encoder and decoder (same parameters) with another prior."""
    return vae_lib.VAE(model.encoder, model.decoder, prior=prior)


def test_evaluation_with_a_standard_normal_mixture_equals_the_default_model(linear_gaussian):
    lg = linear_gaussian(0, data_dim=5, latent_dim=2)
    base = lg.vae(shift=0.3, var_factor=1.5)
    model = _with_prior(base, _standard_normal_prior(2))
    assert base.log_prior is None and model.log_prior is not None
    x = jnp.asarray(lg.sample_x(2, 40))
    key = jax.random.key(7)
    a = vae_lib.evaluate_elbo(key, base, x, num_samples=4, analytic_kl=False)
    b = vae_lib.evaluate_elbo(key, model, x, num_samples=4)  # a learned prior always uses the MC KL
    for u, v in zip(a, b, strict=True):
        assert_allclose(u, v, rtol=1e-5, atol=1e-4)
    ll_a = vae_lib.importance_log_likelihood(key, base, x, num_samples=50)
    ll_b = vae_lib.importance_log_likelihood(key, model, x, num_samples=50)
    assert_allclose(ll_a, ll_b, rtol=1e-5, atol=1e-4)
    q_a = vae_lib.quadrature_log_likelihood(base, x, num_points=120)
    q_b = vae_lib.quadrature_log_likelihood(model, x, num_points=120)
    assert_allclose(q_a, q_b, rtol=1e-5, atol=1e-4)
    assert_allclose(q_a, lg.log_marginal(x), atol=2e-2)  # and both are log p(x)


def test_quadrature_uses_the_learned_prior(linear_gaussian):
    # p(x) = sum_k w_k N(x; W m_k + b, W diag(v_k) W^T + s^2 I) for a linear decoder: closed form
    lg = linear_gaussian(1, data_dim=4, latent_dim=2)
    p = _prior(latent_dim=2, k=3, seed=2)
    model = _with_prior(lg.vae(), p)
    x = np.asarray(lg.sample_x(4, 10), np.float64)
    w = np.asarray(jax.nn.softmax(p.logits[...]), np.float64)
    m, v = np.asarray(p.means[...], np.float64), np.exp(np.asarray(p.logvars[...], np.float64))
    comps = [
        stats.multivariate_normal(
            lg.W @ m[k] + lg.b, lg.W @ np.diag(v[k]) @ lg.W.T + lg.s**2 * np.eye(4)
        ).logpdf(x)
        for k in range(3)
    ]
    expected = special.logsumexp(np.stack(comps, -1) + np.log(w), axis=-1)
    got = vae_lib.quadrature_log_likelihood(model, jnp.asarray(x, jnp.float32), num_points=300, bound=8.0)
    assert_allclose(got, expected, atol=2e-2)


def test_sample_draws_z_from_the_prior(linear_gaussian):
    lg = linear_gaussian(0, data_dim=5, latent_dim=3)
    p = _prior()
    model = _with_prior(lg.vae(), p)
    key = jax.random.key(8)
    assert_allclose(model.sample(key, 6), model.mean_of(model.decode(p.sample(key, 6))), rtol=1e-6)


def test_elbo_surgery_with_a_prior():
    rng = np.random.default_rng(0)
    mean = jnp.asarray(rng.normal(size=(300, 3)), jnp.float32)
    logvar = jnp.asarray(rng.uniform(-2.0, 0.0, size=(300, 3)), jnp.float32)
    key = jax.random.key(9)
    default = elbo_surgery(key, mean, logvar, num_samples=4)
    explicit = elbo_surgery(key, mean, logvar, num_samples=4, log_prior=standard_normal_log_prob)
    assert_allclose(default.mutual_information, explicit.mutual_information, rtol=1e-6)
    assert_allclose(default.marginal_kl, explicit.marginal_kl, rtol=1e-6)
    # with a log_prior the KL is the Monte Carlo estimate on the same draws: here of the analytic value
    se = float(default.mutual_information_se + default.marginal_kl_se)
    assert abs(float(explicit.kl) - float(default.kl)) < 4 * se
    p = _prior()
    mixed = elbo_surgery(key, mean, logvar, num_samples=4, log_prior=p.log_prob)
    assert_allclose(mixed.mutual_information, default.mutual_information, rtol=1e-6)  # prior-free
    assert_allclose(mixed.kl, mixed.mutual_information + mixed.marginal_kl, rtol=1e-5)
    assert float(mixed.marginal_kl) >= -4 * float(mixed.marginal_kl_se)


def test_fit_learns_the_prior_with_the_model_and_reports_its_elbo(digits):
    x_train, x_test = digits.x_train[:512], digits.x_test[:200]
    prior = priors.MixturePrior(4, 5, rngs=nnx.Rngs(1))
    model = vae_lib.mlp_vae(784, 4, hidden=(32,), prior=prior, rngs=nnx.Rngs(0))
    means0 = np.asarray(prior.means[...]).copy()
    logits0 = np.asarray(prior.logits[...]).copy()
    start = vae_lib.evaluate_elbo(jax.random.key(1), model, x_test).elbo
    hist = vae_lib.fit(
        model, x_train, key=jax.random.key(0), epochs=3, batch_size=64, x_test=x_test, progress=False
    )
    assert model.prior is prior  # trained in place, the same module
    assert np.abs(np.asarray(prior.means[...]) - means0).max() > 1e-3
    assert np.abs(np.asarray(prior.logits[...]) - logits0).max() > 1e-4
    end = vae_lib.evaluate_elbo(jax.random.key(1), model, x_test)
    assert float(end.elbo) > float(start) + 50
    last_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 2), 1)  # fit's test key, epoch 3
    assert_allclose(hist["test_elbo"][-1], vae_lib.evaluate_elbo(last_key, model, x_test).elbo, rtol=1e-5)
    with pytest.raises(ValueError, match="free_bits"):
        vae_lib.fit(model, x_train, key=jax.random.key(0), epochs=1, free_bits=0.5, progress=False)


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_its_pseudo_inputs():
    enc = vae_lib.MLPEncoder(6, 2, hidden=(8,), rngs=nnx.Rngs(0))
    dec = vae_lib.MLPDecoder(2, 6, hidden=(8,), likelihood="gaussian", rngs=nnx.Rngs(1))
    u = jax.random.normal(jax.random.key(0), (5, 6))
    model = vae_lib.VAE(enc, dec, prior=priors.VampPrior(enc, u))
    assert model.prior.encoder is model.encoder  # shared, so one set of parameters
    mean, logvar = enc(u)
    z = jax.random.normal(jax.random.key(1), (30, 2)) * 2
    expected = _scipy_mixture(z, np.full(5, -math.log(5)), mean, logvar)
    assert_allclose(model.log_prior(z), expected, rtol=1e-5, atol=1e-5)
    assert model.sample(jax.random.key(2), 3).shape == (3, 6)
    n_params = sum(a.size for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    n_separate = sum(a.size for m in (enc, dec) for a in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert n_params == n_separate + u.size  # the encoder is counted once
