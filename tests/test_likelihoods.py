"""The likelihood registry: each entry against SciPy, the event-axis rule, and that a new likelihood is one
function and one entry (a Laplace likelihood added here is trained and evaluated by the library)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import special, stats

import vae_lib
from vae_lib import likelihoods


def test_registry_entries_match_scipy():
    rng = np.random.default_rng(0)
    x_bin = (rng.random((2, 5, 6)) < 0.5).astype(np.float32)
    logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
    lik = likelihoods.get("bernoulli")
    expected = stats.bernoulli.logpmf(x_bin, special.expit(logits)).sum(-1)
    assert_allclose(lik.log_prob(x_bin, logits), expected, rtol=1e-5)
    assert_allclose(lik.mean(logits), special.expit(logits), rtol=1e-6)
    assert (lik.data, lik.pair) == ("binary", False)

    x = rng.normal(size=(5, 6)).astype(np.float32)
    mean, logvar = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    lik = likelihoods.get("gaussian")
    expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).sum(-1)
    assert_allclose(lik.log_prob(x, (mean, logvar)), expected, rtol=1e-5)
    assert_allclose(lik.mean((mean, logvar)), mean)
    assert (lik.data, lik.pair) == ("real", True)
    # log_likelihood dispatches by name, under jit too
    fn = jax.jit(vae_lib.log_likelihood, static_argnums=2)
    assert_allclose(fn(x, (mean, logvar), "gaussian"), expected, rtol=1e-5)


def test_sample_axes_broadcast_but_event_axes_must_match():
    x = jnp.ones((4, 3)) * 0.5
    out = jnp.zeros((7, 4, 3))
    assert vae_lib.log_likelihood(x[None], out).shape == (7, 4)  # x broadcast over 7 samples of z
    with pytest.raises(ValueError, match="event axis of x, 3"):
        vae_lib.log_likelihood(x, jnp.zeros((4, 1)))  # one logit for all pixels: refused
    with pytest.raises(ValueError, match="event axis of x, 1"):
        vae_lib.log_likelihood(x[:, :1], jnp.zeros((4, 3)))  # one pixel against three outputs: refused


def _laplace_log_prob(x, output):
    """``log Laplace(x; loc, b)`` with ``log b = log_scale``, summed over the last axis."""
    loc, log_scale = output
    return -jnp.sum(jnp.log(2.0) + log_scale + jnp.abs(x - loc) * jnp.exp(-log_scale), axis=-1)


@pytest.fixture
def laplace(monkeypatch):
    """A likelihood added as the module docstring says: one function and one entry."""
    entry = likelihoods.Likelihood(_laplace_log_prob, lambda out: out[0], data="real", pair=True)
    monkeypatch.setitem(likelihoods.LIKELIHOODS, "laplace", entry)
    return entry


def test_a_new_likelihood_is_one_function_and_one_entry(laplace):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    model = vae_lib.mlp_vae(3, 1, hidden=(4,), likelihood="laplace", obs_logvar="shared", rngs=nnx.Rngs(0))
    loc, log_scale = model.decode(jnp.zeros((2, 1)))
    assert log_scale.shape == (2, 3)  # the decoder gives the pair, with one learned log-scale
    # the objectives, fit and the evaluation functions use it by name
    history = vae_lib.fit(model, x, key=jax.random.key(0), epochs=2, batch_size=32, progress=False)
    assert np.isfinite(history["train_elbo"]).all()
    z = jnp.zeros((64, 1))
    expected = stats.laplace.logpdf(x, *(np.asarray(a) for a in _scipy_laplace(model.decode(z)))).sum(-1)
    assert_allclose(vae_lib.log_likelihood(x, model.decode(z), "laplace"), expected, rtol=1e-5)
    log_px = vae_lib.quadrature_log_likelihood(model, x[:4], num_points=200)
    assert log_px.shape == (4,) and np.all(np.isfinite(log_px))


def _scipy_laplace(output):
    loc, log_scale = output
    return loc, jnp.exp(log_scale)
