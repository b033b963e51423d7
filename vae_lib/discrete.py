"""Discrete latents (layer 2: pure ``jax.numpy``): Gumbel-softmax, straight-through, vector quantization.

The pieces Chapter 13 builds its categorical VAE and its VQ-VAE from, each a pure function with the key
first and no batch reduction:

- ``gumbel_softmax``: a relaxed one-hot sample ``softmax((logits + g) / temperature)``, ``g`` standard
  Gumbel (Jang et al., 2017; Maddison et al., 2017), optionally made hard with the straight-through
  estimator;
- ``straight_through``: forward value of one array, gradient of another;
- ``kl_categorical_uniform``: ``KL(Cat(softmax(logits)) || Uniform(K))``;
- ``vector_quantize``: nearest-codebook quantization with the VQ-VAE's straight-through output and its
  codebook and commitment losses (van den Oord et al., 2017);
- ``code_perplexity`` and ``kmeans``: codebook usage, and a k-means codebook initialization.

Shapes: a categorical variable is its last axis of ``K`` logits; every leading axis (batch, code positions)
is kept. Vector quantization works on vectors along the last axis, of length ``D``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_lib import _checks


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """The value of ``hard`` with the gradient of ``soft``: ``soft + stop_gradient(hard - soft)``.

    Args:
      hard: the forward value, any shape.
      soft: a differentiable stand-in, same shape as ``hard``.

    Returns:
      An array equal to ``hard`` (up to rounding) whose Jacobian with respect to anything is ``soft``'s.
    """
    _checks.same_shape(("hard", "soft"), hard, soft)
    return soft + jax.lax.stop_gradient(hard - soft)


def gumbel_softmax(
    key: jax.Array, logits: jax.Array, *, temperature: float | jax.Array, hard: bool = False
) -> jax.Array:
    """A relaxed sample of ``Cat(softmax(logits))`` (the Gumbel-softmax or concrete distribution).

    ``y = softmax((logits + g) / temperature)`` with ``g_k ~ Gumbel(0, 1)`` i.i.d. (``g = -log(-log u)``,
    ``u ~ U(0, 1)``). ``argmax(y) = argmax(logits + g)`` is an exact draw from ``Cat(softmax(logits))``
    whatever the temperature (the Gumbel-max trick); as ``temperature -> 0``, ``y`` tends to that one-hot
    vector, and as it grows, to the uniform vector ``1/K``.

    Args:
      key: PRNG key, used once.
      logits: unnormalized log-probabilities, shape ``(..., K)``.
      temperature: ``> 0``; a Python float, or a scalar array (e.g. a schedule inside ``jax.jit``).
      hard: if true, return the one-hot ``argmax(y)`` with the gradient of ``y`` (straight-through
        Gumbel-softmax, Jang et al., 2017, section 2.2).

    Returns:
      Points of the probability simplex, shape ``(..., K)`` (one-hot vectors if ``hard``).
    """
    key = _checks.key("key", key)
    logits = _checks.array("logits", logits, min_ndim=1, finite=False)
    if isinstance(temperature, (int, float)):
        _checks.real("temperature", temperature, minimum=0.0, strict=True)
    g = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
    y = jax.nn.softmax((logits + g) / temperature, axis=-1)  # (..., K)
    if hard:
        one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
        return straight_through(one_hot, y)
    return y


def kl_categorical_uniform(logits: jax.Array) -> jax.Array:
    """``KL(Cat(softmax(logits)) || Uniform(K))``, summed over the last axis (one categorical variable).

    ``KL = sum_k q_k log q_k + log K``, with ``q = softmax(logits)``; between 0 (uniform ``q``) and
    ``log K`` (one-hot ``q``). Computed from ``log_softmax``, so it stays finite for any finite logits.

    Args:
      logits: shape ``(..., K)``.

    Returns:
      KL divergences in nats, shape ``(...)``; sum over code positions yourself.
    """
    logits = _checks.array("logits", logits, min_ndim=1, finite=False)
    log_q = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(logits.shape[-1])


class Quantized(NamedTuple):
    """The output of ``vector_quantize`` for inputs of shape ``(..., D)``.

    Attributes:
      z_q: the nearest codebook vectors in the forward pass, with the identity as Jacobian with respect
        to ``z_e`` (straight-through), shape ``(..., D)``.
      indices: the chosen codes, int32, shape ``(...)``.
      codebook_loss: ``||stop_gradient(z_e) - e||^2`` per vector, summed over ``D``, shape ``(...)``;
        moves the codebook only.
      commitment_loss: ``||z_e - stop_gradient(e)||^2`` per vector, shape ``(...)``; moves the encoder only.
    """

    z_q: jax.Array
    indices: jax.Array
    codebook_loss: jax.Array
    commitment_loss: jax.Array


def vector_quantize(z_e: jax.Array, codebook: jax.Array) -> Quantized:
    """Replace each vector by its nearest codebook entry (VQ-VAE; van den Oord et al., 2017).

    ``k(n) = argmin_k ||z_e[n] - codebook[k]||^2``, ``e = codebook[k(n)]``. The decoder gets
    ``z_q = z_e + stop_gradient(e - z_e)``: the value ``e``, the gradient passed straight through to
    ``z_e``. The VQ-VAE loss is ``reconstruction + codebook_loss + beta * commitment_loss``: the first loss
    term has no gradient with respect to the codebook, which only the codebook loss moves.

    Args:
      z_e: encoder outputs, shape ``(..., D)``.
      codebook: ``K`` code vectors, shape ``(K, D)``.

    Returns:
      ``Quantized(z_q, indices, codebook_loss, commitment_loss)``; no reduction over leading axes.
    """
    z_e = _checks.array("z_e", z_e, min_ndim=1, finite=False)
    codebook = _checks.array("codebook", codebook, ndim=2, finite=False)
    if codebook.shape[1] != z_e.shape[-1]:
        raise ValueError(
            f"codebook must have shape (K, {z_e.shape[-1]}) to match z_e's last axis, got {codebook.shape}"
        )
    # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, one matrix product for all pairs: (..., D) x (K, D) -> (..., K)
    d2 = (
        jnp.sum(z_e**2, axis=-1, keepdims=True)
        - 2.0 * z_e @ codebook.T
        + jnp.sum(codebook**2, axis=-1)[(None,) * (z_e.ndim - 1)]
    )
    indices = jnp.argmin(d2, axis=-1).astype(jnp.int32)  # (...)
    e = codebook[indices]  # (..., D)
    codebook_loss = jnp.sum((jax.lax.stop_gradient(z_e) - e) ** 2, axis=-1)
    commitment_loss = jnp.sum((z_e - jax.lax.stop_gradient(e)) ** 2, axis=-1)
    return Quantized(straight_through(e, z_e), indices, codebook_loss, commitment_loss)


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
    """How often each of ``num_codes`` codes occurs in ``indices`` (any shape): an int32 vector ``(K,)``."""
    num_codes = _checks.positive_int("num_codes", num_codes)
    return jnp.bincount(jnp.ravel(indices), length=num_codes).astype(jnp.int32)


def code_perplexity(indices: jax.Array, num_codes: int) -> jax.Array:
    """``exp(entropy)`` of the codes' empirical frequencies: the number of equally used codes it equals.

    ``p_k = count_k / n``, ``perplexity = exp(-sum_k p_k log p_k)``: ``K`` when every code is used equally
    often, 1 when one code takes every vector. Counts pool all the entries of ``indices``.

    Args:
      indices: code indices in ``[0, num_codes)``, any shape.
      num_codes: ``K``.

    Returns:
      A scalar between 1 and ``num_codes``.
    """
    p = code_counts(indices, num_codes) / jnp.size(indices)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def kmeans(key: jax.Array, x: jax.Array, num_clusters: int, *, iterations: int = 20) -> jax.Array:
    """Lloyd's k-means: ``num_clusters`` centres for the rows of ``x``.

    Starts from ``num_clusters`` distinct rows of ``x`` drawn at random, then alternates assigning each row
    to its nearest centre and moving each centre to the mean of its rows (a centre with no rows stays
    where it is). Each iteration does not increase ``sum_n min_k ||x_n - c_k||^2``.

    Args:
      key: PRNG key (the initial rows).
      x: data, shape ``(N, D)`` with ``N >= num_clusters``.
      num_clusters: ``K``.
      iterations: Lloyd iterations.

    Returns:
      Centres, shape ``(K, D)``.
    """
    key = _checks.key("key", key)
    x = _checks.array("x", x, ndim=2, finite=False)
    k = _checks.positive_int("num_clusters", num_clusters)
    iterations = _checks.positive_int("iterations", iterations, minimum=0)
    if k > x.shape[0]:
        raise ValueError(f"num_clusters must be <= the number of rows of x ({x.shape[0]}), got {k}")
    centres = x[jax.random.choice(key, x.shape[0], (k,), replace=False)]  # (K, D)

    def step(_, c):
        idx = vector_quantize(x, c).indices  # (N,)
        sums = jax.ops.segment_sum(x, idx, num_segments=k)  # (K, D)
        n = jax.ops.segment_sum(jnp.ones_like(x[:, 0]), idx, num_segments=k)  # (K,)
        return jnp.where(n[:, None] > 0, sums / jnp.maximum(n, 1.0)[:, None], c)

    return jax.lax.fori_loop(0, iterations, step, centres)
