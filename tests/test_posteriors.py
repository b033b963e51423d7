"""Posterior objects (vae_lib.posteriors) and the objectives' posterior hook.

The diagonal Gaussian as a posterior must give today's numbers; a generic posterior object (only
``sample``/``log_prob``) must give the Gaussian path's numbers with the Monte Carlo KL; the IAF step's
log-determinant is checked against ``slogdet`` of the autodiff Jacobian, its inverse against the forward
map, and the 2-D flow density against a quadrature (it must integrate to 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import stats

import vae_lib
from vae_lib import posteriors


def _data(key, b=6, d=5):
    return (jax.random.uniform(key, (b, d)) > 0.5).astype(jnp.float32)


def _gaussian_model(d=5, z=3):
    return vae_lib.mlp_vae(d, z, hidden=(8,), rngs=nnx.Rngs(0))


class _Opaque:
    """A posterior object with only sample and log_prob (no tuple, no sample_and_log_prob)."""

    def __init__(self, q):
        self._q = q

    def sample(self, key, num_samples):
        return self._q.sample(key, num_samples)

    def log_prob(self, z):
        return self._q.log_prob(z)


def _randomize(module, key, scale=0.5):
    """Replace every parameter of ``module`` by N(0, scale^2) draws (the IAF output layers start at 0)."""
    state = nnx.state(module, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    new = [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    nnx.update(module, jax.tree.unflatten(tree, new))


def test_diagonal_gaussian_log_prob_matches_scipy():
    mean = jnp.array([[0.3, -1.0], [2.0, 0.5]])
    logvar = jnp.array([[0.1, -0.7], [0.4, 0.0]])
    q = posteriors.DiagonalGaussian(mean, logvar)
    z = q.sample(jax.random.key(0), 4)  # (4, 2, 2)
    assert z.shape == (4, 2, 2)
    expected = np.stack(
        [
            [
                stats.multivariate_normal(np.asarray(mean[b]), np.diag(np.exp(np.asarray(logvar[b])))).logpdf(
                    np.asarray(z[s, b])
                )
                for b in range(2)
            ]
            for s in range(4)
        ]
    )
    assert_allclose(q.log_prob(z), expected, rtol=1e-5)
    assert_allclose(jax.jit(lambda z: q.log_prob(z))(z), expected, rtol=1e-5)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_diagonal_gaussian_encoder_gives_todays_numbers(analytic_kl):
    model = _gaussian_model()
    x = _data(jax.random.key(1))
    as_q = lambda x: posteriors.DiagonalGaussian(*model.encode(x))  # noqa: E731
    key = jax.random.key(2)
    old = vae_lib.elbo(key, x, model.encode, model.decode, analytic_kl=analytic_kl, num_samples=3)
    new = vae_lib.elbo(key, x, as_q, model.decode, analytic_kl=analytic_kl, num_samples=3)
    for a, b in zip(old, new, strict=True):
        assert float(a) == float(b)  # bitwise: the same code path
    old_w = vae_lib.log_importance_weights(key, x, model.encode, model.decode, num_samples=7)
    new_w = vae_lib.log_importance_weights(key, x, as_q, model.decode, num_samples=7)
    np.testing.assert_array_equal(old_w, new_w)


def test_generic_posterior_matches_gaussian_path():
    """Through the posterior path (sample, log_prob, Monte Carlo KL) the Gaussian gives the same numbers as
    the Gaussian path with analytic_kl=False (the same draws; the KL summed per dimension vs jointly)."""
    model = _gaussian_model()
    x = _data(jax.random.key(3))
    opaque = lambda x: _Opaque(posteriors.DiagonalGaussian(*model.encode(x)))  # noqa: E731
    key = jax.random.key(4)
    ref = vae_lib.elbo(key, x, model.encode, model.decode, analytic_kl=False, num_samples=5)
    got = jax.jit(lambda x: vae_lib.elbo(key, x, opaque, model.decode, num_samples=5))(x)
    assert_allclose(np.array(got), np.array(ref), rtol=1e-5, atol=1e-5)
    ref_w = vae_lib.iwae_bound(key, x, model.encode, model.decode, num_samples=9)
    got_w = vae_lib.iwae_bound(key, x, opaque, model.decode, num_samples=9)
    assert got_w.shape == (x.shape[0],)
    assert_allclose(got_w, ref_w, rtol=1e-5, atol=1e-5)
    rec, kl = vae_lib.elbo_per_example(key, x, opaque, model.decode, num_samples=5)
    assert rec.shape == kl.shape == (x.shape[0],)


def test_iaf_step_log_det_matches_slogdet_of_jacobian():
    z_dim, c_dim = 4, 3
    step = posteriors.IAFStep(z_dim, c_dim, 16, rngs=nnx.Rngs(0))
    _randomize(step, jax.random.key(5))
    z = jax.random.normal(jax.random.key(6), (z_dim,))
    h = jax.random.normal(jax.random.key(7), (c_dim,))

    def f(z):  # one example: (Z,) -> (Z,)
        return step(z[None], h[None])[0][0]

    jac = jax.jacfwd(f)(z)  # (Z, Z)
    sign, logabsdet = jnp.linalg.slogdet(jac)
    log_det = step(z[None], h[None])[1][0]
    assert float(sign) != 0.0
    assert_allclose(log_det, logabsdet, rtol=1e-5, atol=1e-5)
    # before the reversal the Jacobian is lower triangular: output j depends on z_{<=j} only
    assert_allclose(np.triu(np.asarray(jac)[::-1], k=1), 0.0, atol=1e-7)


def test_made_masks_are_autoregressive():
    mask_in, mask_out = posteriors.made_masks(5, 12)
    connect = (mask_in @ mask_out) > 0  # (Z, Z): input i reaches output j
    assert not np.any(np.tril(connect))  # only i < j
    assert np.all(connect[np.triu_indices(5, k=1)])  # and every i < j is reached with 12 hidden units


def test_iaf_inverse_and_log_prob_agree_with_sampling():
    enc = posteriors.IAFEncoder(5, 3, hidden=(8,), num_steps=3, flow_hidden=8, rngs=nnx.Rngs(1))
    _randomize(enc, jax.random.key(8))
    x = _data(jax.random.key(9))
    q = enc(x)
    z, log_q = q.sample_and_log_prob(jax.random.key(10), 4)
    assert z.shape == (4, 6, 3) and log_q.shape == (4, 6)
    assert_allclose(q.log_prob(z), log_q, rtol=1e-3, atol=1e-3)  # float32 inversion (divides by sigma)
    z0 = q.base.sample(jax.random.key(10), 4)
    back = z
    for step in reversed(q.steps):
        back, _ = step.inverse(back, q.context)
    assert_allclose(back, z0, atol=1e-3)
    np.testing.assert_array_equal(q.sample(jax.random.key(10), 4), z)


def test_iaf_density_integrates_to_one():
    """A 2-D flow density over a grid: sum exp(log q) * cell = 1 (independent of the log-det formula)."""
    enc = posteriors.IAFEncoder(5, 2, hidden=(8,), num_steps=2, flow_hidden=8, rngs=nnx.Rngs(2))
    _randomize(enc, jax.random.key(11), scale=0.1)
    x = _data(jax.random.key(12), b=2)
    q = enc(x)
    z, log_cell = vae_lib.evaluation.latent_grid(2, 300, 12.0)  # (G, 2)
    grid = jnp.broadcast_to(z[:, None, :], (z.shape[0], 2, 2))  # (G, B, 2)
    mass = jnp.exp(jax.nn.logsumexp(q.log_prob(grid), axis=0) + log_cell)
    assert_allclose(mass, [1.0, 1.0], atol=2e-3)
    gaussian_mass = jnp.exp(jax.nn.logsumexp(q.base.log_prob(grid), axis=0) + log_cell)
    assert_allclose(gaussian_mass, [1.0, 1.0], atol=2e-3)


def test_iaf_without_steps_is_the_gaussian():
    model = posteriors.iaf_vae(5, 3, hidden=(8,), num_steps=0, rngs=nnx.Rngs(0))
    x = _data(jax.random.key(13))
    gauss = lambda x: (model.encode(x).base.mean, model.encode(x).base.logvar)  # noqa: E731
    key = jax.random.key(14)
    ref = vae_lib.elbo(key, x, gauss, model.decode, analytic_kl=False, num_samples=4)
    got = vae_lib.elbo(key, x, model.encode, model.decode, num_samples=4)
    assert_allclose(np.array(got), np.array(ref), rtol=1e-5, atol=1e-5)


def test_fit_and_evaluation_accept_a_flow():
    model = posteriors.iaf_vae(5, 2, hidden=(8,), num_steps=2, flow_hidden=8, rngs=nnx.Rngs(0))
    x = _data(jax.random.key(15), b=64)
    hist = vae_lib.fit(model, x, key=jax.random.key(16), epochs=3, batch_size=16, progress=False, x_test=x)
    assert len(hist["test_elbo"]) == 3 and np.all(np.isfinite(hist["train_elbo"]))
    hist = vae_lib.fit(
        model,
        x,
        key=jax.random.key(17),
        epochs=1,
        batch_size=16,
        progress=False,
        objective="iwae",
        num_samples=4,
    )
    assert np.isfinite(hist["train_loss"][0])
    terms = vae_lib.evaluate_elbo(jax.random.key(18), model, x, num_samples=200)
    ll = vae_lib.importance_log_likelihood(jax.random.key(19), model, x, num_samples=200)
    assert ll.shape == (64,)
    assert float(ll.mean()) >= float(terms.elbo) - 0.05  # IWAE_200 >= ELBO (200-sample estimates)
    # log p(x) depends on the decoder only: quadrature on a plain VAE that shares it
    plain = vae_lib.VAE(vae_lib.MLPEncoder(5, 2, hidden=(8,), rngs=nnx.Rngs(1)), model.decoder)
    exact = vae_lib.quadrature_log_likelihood(plain, x, num_points=200)
    assert abs(float(ll.mean()) - float(exact.mean())) < 0.05  # a 2-D model: IWAE_200 is near exact
    assert float(exact.mean()) >= float(terms.elbo) - 0.05


def test_free_bits_and_bad_encoder_output_are_refused():
    model = posteriors.iaf_vae(5, 2, hidden=(8,), rngs=nnx.Rngs(0))
    x = _data(jax.random.key(20))
    with pytest.raises(ValueError, match="free_bits"):
        vae_lib.elbo(jax.random.key(0), x, model.encode, model.decode, free_bits=0.5)
    with pytest.raises(TypeError, match="posterior"):
        vae_lib.elbo(jax.random.key(0), x, lambda x: x, model.decode)
    assert math.isfinite(float(vae_lib.elbo(jax.random.key(0), x, model.encode, model.decode).elbo))


class _OpaqueEncoder(nnx.Module):
    """A Gaussian MLP encoder whose output is wrapped as an opaque posterior object (sample, log_prob)."""

    def __init__(self, d, z, rngs):
        self.in_features, self.num_classes = d, 0
        self.net = vae_lib.MLPEncoder(d, z, hidden=(8,), rngs=rngs)

    def __call__(self, x):
        return _Opaque(posteriors.DiagonalGaussian(*self.net(x)))


def test_vae_takes_a_posterior_encoder_and_posterior_vae_is_vae():
    assert posteriors.PosteriorVAE is vae_lib.VAE
    model = posteriors.iaf_vae(5, 2, hidden=(8,), rngs=nnx.Rngs(0))
    assert type(model) is vae_lib.VAE
    x = _data(jax.random.key(21))
    assert isinstance(model.encode(x), posteriors.IAFPosterior)
    with pytest.raises(TypeError, match="posterior_mean"):
        model.reconstruct(x)
    with pytest.raises(TypeError, match="posterior_mean"):
        vae_lib.diagnostics.encode_dataset(model, x)
    with pytest.raises(ValueError, match="key is required"):
        vae_lib.diagnostics.posterior_mean(model, x)


def test_posterior_mean_of_a_gaussian_encoder_is_encode_datasets_mean():
    model = _gaussian_model()
    x = _data(jax.random.key(22), b=23)
    mean, _ = vae_lib.diagnostics.encode_dataset(model, x)
    got = vae_lib.diagnostics.posterior_mean(model, x, batch_size=5)
    np.testing.assert_array_equal(got, mean)
    n, activity = vae_lib.diagnostics.active_units(got)
    assert (n, np.asarray(activity).tolist()) == (
        vae_lib.diagnostics.active_units(mean)[0],
        np.asarray(vae_lib.diagnostics.active_units(mean)[1]).tolist(),
    )


def test_posterior_mean_of_a_posterior_object_uses_common_random_numbers():
    """Through the posterior path the Gaussian's Monte Carlo mean is mean + std * eps_bar, with ONE eps_bar
    (the mean of the S base draws of the key) shared by every example: checked against that closed form."""
    d, z_dim, s = 5, 3, 64
    enc = _OpaqueEncoder(d, z_dim, nnx.Rngs(3))
    model = vae_lib.VAE(enc, vae_lib.MLPDecoder(z_dim, d, hidden=(8,), rngs=nnx.Rngs(4)))
    x = _data(jax.random.key(23), b=13)
    key = jax.random.key(24)
    got = vae_lib.diagnostics.posterior_mean(model, x, key=key, num_samples=s, batch_size=4)  # 13 rows padded
    mean, logvar = (np.asarray(a, np.float64) for a in enc.net(x))
    eps_bar = np.asarray(jax.random.normal(key, (s, 1, z_dim)), np.float64).mean(axis=0)  # (1, Z)
    assert got.shape == (13, z_dim)
    assert_allclose(got, mean + np.exp(0.5 * logvar) * eps_bar, rtol=1e-5, atol=1e-5)
    # the shared error shifts every example alike: Var_x of the estimate is close to Var_x of the true means
    assert_allclose(np.var(np.asarray(got), axis=0), np.var(mean, axis=0), rtol=0.1, atol=1e-3)


def test_posterior_mean_of_a_flow():
    """Zero-initialized IAF steps are z' = sigmoid(2) z, reversed: after two, E[z_T] = sigmoid(2)^2 * mean,
    a known mean; random steps are checked against an independent Monte Carlo mean of 20,000 fresh draws."""
    model = posteriors.iaf_vae(5, 3, hidden=(8,), num_steps=2, flow_hidden=8, rngs=nnx.Rngs(5))
    x = _data(jax.random.key(25), b=7)
    q = model.encode(x)
    c = 1.0 / (1.0 + math.exp(-2.0))
    s = 4000
    got = np.asarray(vae_lib.diagnostics.posterior_mean(model, x, key=jax.random.key(26), num_samples=s))
    std = c**2 * np.exp(0.5 * np.asarray(q.base.logvar))
    assert np.all(np.abs(got - c**2 * np.asarray(q.base.mean)) < 4 * std / math.sqrt(s))
    _randomize(model.encoder, jax.random.key(27), scale=0.3)
    got = np.asarray(vae_lib.diagnostics.posterior_mean(model, x, key=jax.random.key(28), num_samples=s))
    draws = np.asarray(model.encode(x).sample(jax.random.key(29), 20_000), np.float64)  # (S, B, Z)
    se = np.sqrt(draws.var(axis=0) / 20_000 + draws.var(axis=0) / s)  # both estimates' Monte Carlo errors
    assert np.all(np.abs(got - draws.mean(axis=0)) < 5 * se)
    n_active, activity = vae_lib.diagnostics.active_units(got)
    assert activity.shape == (3,) and 0 <= n_active <= 3


def test_posterior_mean_gives_an_input_independent_dimension_zero_activity():
    """A dimension whose q(z_j|x) ignores x has activity exactly 0 (the same draws for every example)."""

    class Partly(nnx.Module):
        def __init__(self, rngs):
            self.in_features, self.num_classes = 5, 0
            self.net = vae_lib.MLPEncoder(5, 2, hidden=(8,), rngs=rngs)

        def __call__(self, x):
            mean, logvar = self.net(x)
            mean = mean.at[:, 1].set(0.3)  # dimension 1 does not depend on x
            logvar = logvar.at[:, 1].set(-0.5)
            return _Opaque(posteriors.DiagonalGaussian(mean, logvar))

    model = vae_lib.VAE(Partly(nnx.Rngs(6)), vae_lib.MLPDecoder(2, 5, hidden=(8,), rngs=nnx.Rngs(7)))
    x = _data(jax.random.key(30), b=40)
    means = vae_lib.diagnostics.posterior_mean(model, x, key=jax.random.key(31), num_samples=16)
    n_active, activity = vae_lib.diagnostics.active_units(means, threshold=1e-6)
    assert float(activity[1]) < 1e-10 and float(activity[0]) > 1e-4 and n_active == 1
