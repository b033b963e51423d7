"""Log-densities and KL divergences (layer 1: pure ``jax.numpy``).

All functions work per example: the last axis is the event axis and is summed over; every leading axis
(batch, samples) is kept. Nothing here reduces over the batch. A parameter is a scalar or has the event
axis of its values exactly; leading axes broadcast. To get a term per dimension instead of their sum, give
each dimension its own event axis: ``kl_standard_normal(mean[..., None], logvar[..., None])`` is ``(..., Z)``.

Only static checks (shapes, dtypes) happen here, so every function gives the same result eagerly and under
``jax.jit``, on any values: a NaN in gives a NaN out, and a Bernoulli target outside [0, 1] is not caught
here (``fit`` and the evaluation functions check their data once, where it enters).

Gaussians are parameterized by ``mean`` and ``logvar = log(sigma**2)``. The log-variance is unconstrained,
so any real number is a valid variance and no positivity constraint (softplus, clipping) is needed;
``exp(logvar)`` overflows float32 only for ``logvar > 88``, far outside what an encoder produces in ordinary
use (the training loop stops on a non-finite loss anyway). The formulas never divide by a variance (they
multiply by ``exp(-logvar)``) and never take ``log`` of a probability: the Gaussian log-density and both
KL divergences stay finite and accurate to float32 precision for ``logvar`` in [-30, 30], and the KL terms
use ``expm1(r) - r`` (``r`` a log-variance difference), which is >= 0 and accurate when ``q`` is close to
``p`` (a nearly inactive latent unit). ``bernoulli_log_prob`` works from logits with ``softplus``, finite
for logits of +-1e4 (tests/test_distributions.py checks all of this).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_lib import _checks

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Log-density of a diagonal Gaussian, summed over the last axis.

    ``log N(x; mean, diag(exp(logvar))) = -1/2 sum_d [log 2pi + logvar_d + (x_d - mean_d)^2 / exp(logvar_d)]``

    Args:
      x: values, shape ``(..., D)``.
      mean: means, broadcastable to ``x`` (a scalar, or with ``x``'s last axis).
      logvar: log-variances, likewise.

    Returns:
      Log-densities of shape ``(...)`` (no reduction over leading axes).
    """
    x, mean, logvar = _checks.event_arrays(x=x, mean=mean, logvar=logvar)
    return -0.5 * jnp.sum(_LOG_2PI + logvar + (x - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """Log-density of ``N(0, I)``, summed over the last axis.

    ``log N(z; 0, I) = -1/2 sum_d (log 2pi + z_d^2)``

    Args:
      z: values, shape ``(..., Z)``.

    Returns:
      Log-densities of shape ``(...)``.
    """
    (z,) = _checks.event_arrays(z=z)
    return -0.5 * jnp.sum(_LOG_2PI + z**2, axis=-1)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Bernoulli log-likelihood from logits, summed over the last axis.

    ``log p(x) = sum_d [x_d * l_d - softplus(l_d)]``, which equals
    ``sum_d [x_d log sigmoid(l_d) + (1 - x_d) log(1 - sigmoid(l_d))]`` but stays finite for any finite logit
    (no ``log(0)``). Targets may be any value in [0, 1] (this is then the continuous cross-entropy, which
    is a proper log-likelihood only for binary ``x``).

    Args:
      x: targets in [0, 1], shape ``(..., D)``.
      logits: logits, broadcastable to ``x`` (a scalar, or with ``x``'s last axis).

    Returns:
      Log-likelihoods of shape ``(...)``.
    """
    x, logits = _checks.event_arrays(x=x, logits=logits)
    # x * l - softplus(l) written as -(x softplus(-l) + (1 - x) softplus(l)): the same value (l = softplus(l)
    # - softplus(-l)), without the cancellation of x * l against softplus(l) when l >> 0 and x = 1.
    return -jnp.sum(x * jax.nn.softplus(-logits) + (1.0 - x) * jax.nn.softplus(logits), axis=-1)


def kl_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Analytic ``KL(N(mean, diag(exp(logvar))) || N(0, I))``, summed over the last axis.

    ``KL = 1/2 sum_d [exp(logvar_d) + mean_d^2 - 1 - logvar_d]``

    Args:
      mean: posterior means, shape ``(..., Z)``.
      logvar: posterior log-variances, same shape.

    Returns:
      KL divergences of shape ``(...)``, each >= 0.
    """
    mean, logvar = _checks.event_arrays(mean=mean, logvar=logvar, equal_shapes=True)
    # expm1(lv) - lv == exp(lv) - 1 - lv, without the cancellation near lv = 0
    return 0.5 * jnp.sum(jnp.expm1(logvar) - logvar + mean**2, axis=-1)


def kl_gaussians(mean_q: jax.Array, logvar_q: jax.Array, mean_p: jax.Array, logvar_p: jax.Array) -> jax.Array:
    """Analytic ``KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p)))`` for diagonal Gaussians.

    ``KL = 1/2 sum_d [logvar_p - logvar_q + (exp(logvar_q) + (mean_q - mean_p)^2) / exp(logvar_p) - 1]``

    Args:
      mean_q, logvar_q: parameters of q, shape ``(..., Z)``.
      mean_p, logvar_p: parameters of p, broadcastable to ``(..., Z)``.

    Returns:
      KL divergences of shape ``(...)``, summed over the last axis.
    """
    mean_q, logvar_q = _checks.event_arrays(mean_q=mean_q, logvar_q=logvar_q, equal_shapes=True)
    mean_q, mean_p, logvar_p = _checks.event_arrays(mean_q=mean_q, mean_p=mean_p, logvar_p=logvar_p)
    r = logvar_q - logvar_p  # expm1(r) - r == exp(r) - 1 - r >= 0, accurate near r = 0
    return 0.5 * jnp.sum(jnp.expm1(r) - r + (mean_q - mean_p) ** 2 * jnp.exp(-logvar_p), axis=-1)
