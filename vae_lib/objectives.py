"""Objectives (layer 2): reparameterization, the ELBO and the importance-weighted bound.

The encoder and decoder come in as plain callables, so the same functions serve every model:

- ``encode(x) -> (mean, logvar)`` with ``x`` of shape ``(B, D)`` and outputs of shape ``(B, Z)``;
- ``decode(z) -> output`` with ``z`` of shape ``(N, Z)``. For ``likelihood="bernoulli"`` the output is the
  logits, shape ``(N, D)``; for ``likelihood="gaussian"`` it is a pair ``(mean, logvar)`` of shape ``(N, D)``.

Reduction: log-likelihoods and KL terms are summed over data and latent dimensions (a log-density of one
example, in nats); ``elbo`` then averages over the batch, ``iwae_bound`` and ``elbo_per_example`` do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_lib import _checks
from vae_lib.distributions import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_standard_normal,
    standard_normal_log_prob,
)

LIKELIHOODS = ("bernoulli", "gaussian")

Encoder = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Decoder = Callable[[jax.Array], Any]


class ElboTerms(NamedTuple):
    """Batch means of the ELBO and its parts (nats per example).

    Attributes:
      objective: ``reconstruction - beta * kl``, what training maximizes (equals ``elbo`` when beta = 1).
      elbo: ``reconstruction - kl``, the evidence lower bound itself, whatever beta is.
      reconstruction: Monte Carlo estimate of ``E_q[log p(x|z)]``.
      kl: ``KL(q(z|x) || p(z))``, analytic or Monte Carlo.
    """

    objective: jax.Array
    elbo: jax.Array
    reconstruction: jax.Array
    kl: jax.Array


def reparameterize(
    key: jax.Array, mean: jax.Array, logvar: jax.Array, num_samples: int | None = None
) -> jax.Array:
    """Draw ``z ~ N(mean, diag(exp(logvar)))`` as a differentiable function of the parameters.

    ``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``.

    Args:
      key: PRNG key, used once.
      mean: shape ``(..., Z)``.
      logvar: same shape as ``mean``.
      num_samples: if given, draw that many samples along a new leading axis.

    Returns:
      Samples of shape ``(..., Z)``, or ``(num_samples, ..., Z)``.
    """
    key = _checks.key("key", key)
    mean = _checks.array("mean", mean, min_ndim=1)
    logvar = _checks.array("logvar", logvar, min_ndim=1)
    _checks.same_shape(("mean", "logvar"), mean, logvar)
    shape = mean.shape
    if num_samples is not None:
        shape = (_checks.positive_int("num_samples", num_samples),) + shape
    eps = jax.random.normal(key, shape, dtype=mean.dtype)
    return jnp.broadcast_to(mean, shape) + jnp.exp(0.5 * jnp.broadcast_to(logvar, shape)) * eps


def log_likelihood(x: jax.Array, output: Any, likelihood: str = "bernoulli") -> jax.Array:
    """``log p(x|z)`` from a decoder's output, summed over the data dimensions.

    Args:
      x: data, shape ``(B, D)``.
      output: the decoder's output for ``B`` latents (or ``(K, B, ...)`` for ``K`` latents per example):
        logits for ``"bernoulli"``, a pair ``(mean, logvar)`` for ``"gaussian"``.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.

    Returns:
      Log-likelihoods of shape ``(B,)`` (or ``(K, B)``).
    """
    _checks.choice("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "bernoulli":
        if isinstance(output, tuple):
            raise TypeError("a Bernoulli decoder must return logits (one array), got a tuple")
        return bernoulli_log_prob(x, output)
    if not (isinstance(output, tuple) and len(output) == 2):
        raise TypeError("a Gaussian decoder must return a pair (mean, logvar)")
    mean, logvar = output
    return gaussian_log_prob(x, mean, logvar)


def _decode_samples(decode: Decoder, z: jax.Array) -> Any:
    """Decode ``z`` of shape ``(K, B, Z)`` by flattening to ``(K * B, Z)``."""
    k, b, _ = z.shape
    out = decode(z.reshape(k * b, -1))
    return jax.tree.map(lambda a: a.reshape(k, b, *a.shape[1:]), out)


def _check_inputs(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> None:
    if mean.ndim != 2 or logvar.shape != mean.shape:
        raise ValueError(
            f"encode(x) must return (mean, logvar) of shape (B, Z), got {mean.shape} and {logvar.shape}"
        )
    _checks.same_batch(("x", "encode(x)"), x, mean)


def elbo_per_example(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    analytic_kl: bool = True,
    num_samples: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """The ELBO's two terms for each example.

    ``ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))``, the expectation estimated with
    ``num_samples`` reparameterized samples; the KL is analytic, or ``mean_s[log q(z_s|x) - log p(z_s)]``
    with the same samples when ``analytic_kl=False``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      analytic_kl: closed-form KL (lower variance) or its Monte Carlo estimate.
      num_samples: samples of ``z`` per example.

    Returns:
      ``(reconstruction, kl)``, each of shape ``(B,)``; the ELBO is their difference.
    """
    x = _checks.array("x", x, ndim=2)
    _checks.function("encode", encode)
    _checks.function("decode", decode)
    _checks.choice("likelihood", likelihood, LIKELIHOODS)
    _checks.boolean("analytic_kl", analytic_kl)
    num_samples = _checks.positive_int("num_samples", num_samples)
    mean, logvar = encode(x)  # (B, D) -> (B, Z), (B, Z)
    _check_inputs(x, mean, logvar)
    z = reparameterize(key, mean, logvar, num_samples)  # (K, B, Z)
    rec = log_likelihood(x[None], _decode_samples(decode, z), likelihood).mean(axis=0)  # (B,)
    if analytic_kl:
        kl = kl_standard_normal(mean, logvar)
    else:
        log_q = gaussian_log_prob(z, mean[None], logvar[None])  # (K, B)
        kl = (log_q - standard_normal_log_prob(z)).mean(axis=0)
    return rec, kl


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    beta: float = 1.0,
    analytic_kl: bool = True,
    num_samples: int = 1,
) -> ElboTerms:
    """The (beta-weighted) ELBO, averaged over the batch.

    ``objective = mean_b [E_q log p(x_b|z) - beta * KL(q(z|x_b) || p(z))]``; see ``elbo_per_example``.
    Sums over data and latent dimensions, mean over the batch. Training minimizes ``-objective``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      beta: weight of the KL term (beta-VAE), >= 0. ``elbo`` in the result is always the true ELBO.
      analytic_kl: closed-form KL or its Monte Carlo estimate.
      num_samples: samples of ``z`` per example.

    Returns:
      ``ElboTerms(objective, elbo, reconstruction, kl)``, scalars.
    """
    beta = _checks.real("beta", beta, minimum=0.0)
    rec, kl = elbo_per_example(
        key, x, encode, decode, likelihood=likelihood, analytic_kl=analytic_kl, num_samples=num_samples
    )
    rec, kl = rec.mean(), kl.mean()
    return ElboTerms(objective=rec - beta * kl, elbo=rec - kl, reconstruction=rec, kl=kl)


def iwae_bound(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    num_samples: int,
    likelihood: str = "bernoulli",
) -> jax.Array:
    """The importance-weighted bound ``IWAE_k`` (Burda et al., 2016) for each example.

    ``IWAE_k(x) = log (1/k) sum_s p(x|z_s) p(z_s) / q(z_s|x)`` with ``z_s ~ q(z|x)``, computed with
    ``logsumexp``. ``IWAE_1`` is the ELBO; ``E[IWAE_k]`` rises with ``k`` towards ``log p(x)``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      num_samples: ``k >= 1``.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.

    Returns:
      Bounds of shape ``(B,)`` (no batch reduction).
    """
    x = _checks.array("x", x, ndim=2)
    _checks.function("encode", encode)
    _checks.function("decode", decode)
    _checks.choice("likelihood", likelihood, LIKELIHOODS)
    k = _checks.positive_int("num_samples", num_samples)
    mean, logvar = encode(x)
    _check_inputs(x, mean, logvar)
    z = reparameterize(key, mean, logvar, k)  # (K, B, Z)
    log_w = (
        log_likelihood(x[None], _decode_samples(decode, z), likelihood)
        + standard_normal_log_prob(z)
        - gaussian_log_prob(z, mean[None], logvar[None])
    )  # (K, B)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)
