"""vae_lib.discrete against independent computations: NumPy re-derivations, closed forms, quadrature and
Monte Carlo frequencies compared within a stated number of standard errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, special

from vae_lib import discrete

LOGITS = np.array([1.0, -0.5, 0.3, 2.0], np.float32)


def _np_softmax(a, axis=-1):
    a = np.asarray(a, np.float64)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- straight_through ---------------------------------------------------------------------------------


def test_straight_through_has_the_hard_value_and_the_soft_gradient():
    w = jnp.array([0.3, -1.0, 2.0])
    soft = lambda t: jax.nn.softmax(t)  # noqa: E731
    hard = lambda t: jax.nn.one_hot(jnp.argmax(t), 3)  # noqa: E731
    t = jnp.array([0.1, 0.5, -0.2])
    value = discrete.straight_through(hard(t), soft(t))
    assert_array_equal(np.asarray(value), [0.0, 1.0, 0.0])
    g_st = jax.grad(lambda t: jnp.dot(w, discrete.straight_through(hard(t), soft(t))))(t)
    p = _np_softmax(np.asarray(t))
    expected = (np.diag(p) - np.outer(p, p)) @ np.asarray(w, np.float64)  # J_softmax^T w, J symmetric
    assert_allclose(np.asarray(g_st), expected, rtol=1e-5, atol=1e-7)


def test_straight_through_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="hard and soft must have the same shape"):
        discrete.straight_through(jnp.zeros(3), jnp.zeros(4))


# --- gumbel_softmax -------------------------------------------------------------------------------------


def test_gumbel_softmax_is_softmax_of_logits_plus_the_keys_gumbel_noise():
    key = jax.random.key(0)
    logits = np.tile(LOGITS, (5, 1))  # (5, 4)
    g = np.asarray(jax.random.gumbel(key, logits.shape), np.float64)  # the noise the function draws
    for tau in (0.1, 1.0, 3.0):
        y = discrete.gumbel_softmax(key, jnp.asarray(logits), temperature=tau)
        assert y.shape == (5, 4)
        assert_allclose(np.asarray(y), _np_softmax((logits + g) / tau), rtol=1e-5, atol=1e-6)


def test_gumbel_max_frequencies_match_the_softmax_probabilities():
    """argmax of a relaxed sample is a draw of Cat(softmax(logits)) at any temperature (Gumbel-max)."""
    n = 200_000
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, 4))
    p = _np_softmax(LOGITS)
    se = np.sqrt(p * (1 - p) / n)  # binomial standard error of each frequency
    for tau in (0.2, 5.0):
        y = discrete.gumbel_softmax(jax.random.key(1), logits, temperature=tau)
        freq = np.bincount(np.asarray(jnp.argmax(y, axis=-1)), minlength=4) / n
        assert np.all(np.abs(freq - p) < 4 * se), (freq, p)


def test_binary_concrete_mean_matches_quadrature():
    """K = 2: y_1 = sigmoid((l_1 - l_2 + L) / tau) with L ~ Logistic(0, 1); E[y_1] by quadrature."""
    l1, l2, tau, n = 0.7, -0.4, 0.6, 200_000
    logits = jnp.broadcast_to(jnp.array([l1, l2]), (n, 2))
    y1 = np.asarray(discrete.gumbel_softmax(jax.random.key(2), logits, temperature=tau)[:, 0], np.float64)
    logistic_pdf = lambda u: special.expit(u) * special.expit(-u)  # noqa: E731
    exact, _ = integrate.quad(lambda u: special.expit((l1 - l2 + u) / tau) * logistic_pdf(u), -60, 60)
    assert abs(y1.mean() - exact) < 4 * y1.std() / np.sqrt(n)


def test_gumbel_softmax_limits_in_temperature():
    key = jax.random.key(3)
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (1000, 4))
    cold = np.asarray(discrete.gumbel_softmax(key, logits, temperature=0.01))
    hot = np.asarray(discrete.gumbel_softmax(key, logits, temperature=1000.0))
    one_hot = np.eye(4)[np.argmax(cold, axis=-1)]
    assert np.mean(np.abs(cold - one_hot).sum(-1) < 1e-3) > 0.95  # almost all within 1e-3 of a vertex
    assert_allclose(hot, 0.25, atol=0.01)
    for y in (cold, hot):
        assert np.all(y >= 0)
        assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_hard_gumbel_softmax_is_one_hot_with_the_soft_gradient():
    key = jax.random.key(4)
    t = jnp.asarray(LOGITS)
    w = jnp.array([0.5, -1.0, 2.0, 0.1])
    soft = discrete.gumbel_softmax(key, t, temperature=0.5)
    hard = discrete.gumbel_softmax(key, t, temperature=0.5, hard=True)
    assert_array_equal(np.asarray(hard), np.eye(4)[int(jnp.argmax(soft))])
    g_soft = jax.grad(lambda t: jnp.dot(w, discrete.gumbel_softmax(key, t, temperature=0.5)))(t)
    g_hard = jax.grad(lambda t: jnp.dot(w, discrete.gumbel_softmax(key, t, temperature=0.5, hard=True)))(t)
    assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6, atol=1e-7)


def test_gumbel_softmax_jit_keys_and_traced_temperature():
    f = jax.jit(lambda k, logits, tau: discrete.gumbel_softmax(k, logits, temperature=tau))
    a = f(jax.random.key(5), jnp.asarray(LOGITS), jnp.float32(0.7))
    b = discrete.gumbel_softmax(jax.random.key(5), jnp.asarray(LOGITS), temperature=0.7)
    c = discrete.gumbel_softmax(jax.random.key(6), jnp.asarray(LOGITS), temperature=0.7)
    assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert not np.allclose(np.asarray(b), np.asarray(c))


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_gumbel_softmax_rejects_a_nonpositive_temperature(tau):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        discrete.gumbel_softmax(jax.random.key(0), jnp.asarray(LOGITS), temperature=tau)


# --- kl_categorical_uniform -------------------------------------------------------------------------


def test_kl_categorical_uniform_against_numpy():
    logits = np.random.default_rng(0).normal(size=(3, 5, 7)).astype(np.float32)
    q = _np_softmax(logits)
    expected = np.sum(q * np.log(q * 7), axis=-1)
    got = discrete.kl_categorical_uniform(jnp.asarray(logits))
    assert got.shape == (3, 5)
    assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)
    assert_allclose(
        np.asarray(jax.jit(discrete.kl_categorical_uniform)(logits)), expected, rtol=1e-5, atol=1e-6
    )


def test_kl_categorical_uniform_limits():
    assert_allclose(float(discrete.kl_categorical_uniform(jnp.zeros(10))), 0.0, atol=1e-6)
    one_hot = discrete.kl_categorical_uniform(jnp.array([1e4, 0.0, 0.0, 0.0]))  # finite logits, q one-hot
    assert_allclose(float(one_hot), math.log(4), rtol=1e-6)


# --- vector_quantize ----------------------------------------------------------------------------------


def _vq_case(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(6, 3, 4)).astype(np.float32), rng.normal(size=(9, 4)).astype(np.float32)


def test_vector_quantize_against_brute_force():
    z_e, codebook = _vq_case()
    out = discrete.vector_quantize(jnp.asarray(z_e), jnp.asarray(codebook))
    d2 = ((z_e[:, :, None, :].astype(np.float64) - codebook[None, None]) ** 2).sum(-1)  # (6, 3, 9)
    idx = d2.argmin(-1)
    assert out.indices.dtype == jnp.int32 and out.indices.shape == (6, 3)
    assert_array_equal(np.asarray(out.indices), idx)
    assert_allclose(np.asarray(out.z_q), codebook[idx], rtol=1e-6, atol=1e-6)
    assert_allclose(np.asarray(out.codebook_loss), d2.min(-1), rtol=1e-5, atol=1e-5)
    assert_allclose(np.asarray(out.commitment_loss), d2.min(-1), rtol=1e-5, atol=1e-5)
    jitted = jax.jit(discrete.vector_quantize)(z_e, codebook)
    assert_array_equal(np.asarray(jitted.indices), idx)


def test_vector_quantize_gradients_go_where_the_vq_vae_sends_them():
    z_e, codebook = (jnp.asarray(a) for a in _vq_case(1))
    w = jnp.asarray(np.random.default_rng(2).normal(size=z_e.shape).astype(np.float32))
    # straight-through: d(sum w * z_q)/dz_e = w, and nothing reaches the codebook through z_q
    gz, gc = jax.grad(lambda z, c: jnp.sum(w * discrete.vector_quantize(z, c).z_q), argnums=(0, 1))(
        z_e, codebook
    )
    assert_allclose(np.asarray(gz), np.asarray(w), rtol=1e-6)
    assert_allclose(np.asarray(gc), 0.0)
    out = discrete.vector_quantize(z_e, codebook)
    e = np.asarray(codebook)[np.asarray(out.indices)]
    # the codebook loss moves only the codebook: d/de ||z - e||^2 = 2 (e - z), summed over the vectors using e
    gz, gc = jax.grad(lambda z, c: discrete.vector_quantize(z, c).codebook_loss.sum(), argnums=(0, 1))(
        z_e, codebook
    )
    assert_allclose(np.asarray(gz), 0.0)
    expected = np.zeros_like(np.asarray(codebook))
    np.add.at(expected, np.asarray(out.indices).ravel(), (2 * (e - np.asarray(z_e))).reshape(-1, 4))
    assert_allclose(np.asarray(gc), expected, rtol=1e-5, atol=1e-5)
    # the commitment loss moves only the encoder output: d/dz ||z - e||^2 = 2 (z - e)
    gz, gc = jax.grad(lambda z, c: discrete.vector_quantize(z, c).commitment_loss.sum(), argnums=(0, 1))(
        z_e, codebook
    )
    assert_allclose(np.asarray(gz), 2 * (np.asarray(z_e) - e), rtol=1e-5, atol=1e-5)
    assert_allclose(np.asarray(gc), 0.0)


def test_vector_quantize_rejects_a_codebook_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"codebook must have shape \(K, 4\)"):
        discrete.vector_quantize(jnp.zeros((2, 4)), jnp.zeros((3, 5)))


# --- usage: counts and perplexity --------------------------------------------------------------------


def test_code_counts_and_perplexity_against_numpy():
    idx = np.random.default_rng(3).integers(0, 5, size=(40, 3))  # code 5 and up never used
    counts = np.bincount(idx.ravel(), minlength=8)
    assert_array_equal(np.asarray(discrete.code_counts(jnp.asarray(idx), 8)), counts)
    p = counts[counts > 0] / idx.size
    assert_allclose(
        float(discrete.code_perplexity(jnp.asarray(idx), 8)), np.exp(-np.sum(p * np.log(p))), rtol=1e-5
    )


def test_perplexity_limits():
    assert_allclose(float(discrete.code_perplexity(jnp.arange(16) % 8, 8)), 8.0, rtol=1e-6)
    assert_allclose(float(discrete.code_perplexity(jnp.full((10,), 3), 8)), 1.0, rtol=1e-6)


# --- kmeans -------------------------------------------------------------------------------------------


def _inertia(x, c):
    return float(((x[:, None, :] - c[None]) ** 2).sum(-1).min(-1).sum())


def test_kmeans_finds_well_separated_clusters():
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(200, 2)) for c in centres]).astype(np.float32)
    found = np.asarray(discrete.kmeans(jax.random.key(0), jnp.asarray(x), 3, iterations=10))
    order = np.argsort(found[:, 0] * 100 + found[:, 1])  # sort as the true centres are
    assert_allclose(found[order], centres[[0, 2, 1]], atol=0.05)


def test_kmeans_one_lloyd_step_against_numpy_and_never_worse():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    key = jax.random.key(1)
    start = np.asarray(discrete.kmeans(key, jnp.asarray(x), 6, iterations=0))  # the initial rows
    assert all(any(np.array_equal(s, r) for r in x) for s in start)
    assert len({tuple(s) for s in start}) == 6
    one = np.asarray(discrete.kmeans(key, jnp.asarray(x), 6, iterations=1))
    assign = ((x[:, None, :] - start[None]) ** 2).sum(-1).argmin(-1)
    expected = np.stack([x[assign == k].mean(0) if np.any(assign == k) else start[k] for k in range(6)])
    assert_allclose(one, expected, rtol=1e-5, atol=1e-5)
    inertias = [
        _inertia(x, np.asarray(discrete.kmeans(key, jnp.asarray(x), 6, iterations=i))) for i in range(6)
    ]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(inertias, inertias[1:], strict=False))


def test_kmeans_rejects_more_clusters_than_rows():
    with pytest.raises(ValueError, match="num_clusters must be <="):
        discrete.kmeans(jax.random.key(0), jnp.zeros((3, 2)), 4)
