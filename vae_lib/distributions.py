"""Log-densities and KL divergences (layer 1: pure ``jax.numpy``).

All functions work per example: the last axis is the event axis and is summed over; every leading axis
(batch, samples) is kept. Nothing here reduces over the batch. A parameter is a scalar or has the event
axis of its values exactly; leading axes broadcast. To get a term per dimension instead of their sum, give
each dimension its own event axis: ``kl_standard_normal(mean[..., None], logvar[..., None])`` is ``(..., Z)``.

Only static checks (shapes, dtypes) happen here, so every function gives the same result eagerly and under
``jax.jit``, on any values: a NaN in gives a NaN out, and a Bernoulli target outside [0, 1] is not caught
here (``fit`` and the evaluation functions check their data once, where it enters).

Gaussians are parameterized by ``mean`` and ``logvar = log(sigma**2)``. The log-variance is unconstrained,
so any real number is a valid variance and no positivity constraint (softplus, clipping) is needed. The
formulas never divide by a variance and never take ``log`` of a probability. The squared distance over a
variance, ``(x - mean)^2 exp(-logvar)``, is computed as written while ``exp(-logvar)`` is finite, and as
``exp(2 log|x - mean| - logvar)`` (0 where ``x == mean``) below ``logvar = -(log of the dtype's largest
number) + 1`` (about -87 in float32), so a very narrow Gaussian gives its true, finite log-density
(``gaussian_log_prob(0, 0, -200)`` is about +99, not ``0 * inf = NaN``); a result is infinite only where
the true value exceeds the dtype's range. The KL terms use ``expm1(r) - r`` (``r`` a log-variance
difference), which is >= 0 and accurate when ``q`` is close to ``p`` (a nearly inactive latent unit).
``bernoulli_log_prob`` works from logits with ``softplus``, finite for every finite logit; a term whose
target weight is exactly 0 is dropped, so an infinite logit that agrees with a binary target gives 0
(``bernoulli_log_prob(1, inf) == 0``) and one that contradicts it gives ``-inf``. On ordinary inputs these
are bitwise the plain formulas (tests/test_distributions.py and tests/test_reliability.py check this
against SciPy).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_lib import _checks

_LOG_2PI = math.log(2.0 * math.pi)


def _squared_distance_over_variance(d: jax.Array, logvar: jax.Array) -> jax.Array:
    """``d^2 exp(-logvar)``, elementwise, finite where the true value is (see the module docstring).

    Computed as ``D^2 exp(-L)`` with ``D = d, L = logvar`` where ``exp(-logvar)`` is finite (so ordinary
    inputs give bitwise the plain formula), ``D = 1, L = logvar - 2 log|d|`` where it is not, and
    ``D = 0, L = 0`` where it is not and ``d == 0``. Only the inputs are selected, and each branch gets safe
    arguments, so gradients are finite too."""
    dtype = jnp.result_type(d, logvar)
    narrow = logvar < -(math.log(jnp.finfo(dtype).max) - 1.0)  # exp(-logvar) would overflow
    use_log = narrow & (d != 0)
    log_abs_d = jnp.log(jnp.where(use_log, jnp.abs(d), 1.0))
    scale = jnp.where(use_log, 1.0, d)
    log_var = jnp.where(use_log, logvar - 2.0 * log_abs_d, jnp.where(narrow, 0.0, logvar))
    return scale**2 * jnp.exp(-log_var)


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
    return -0.5 * jnp.sum(_LOG_2PI + logvar + _squared_distance_over_variance(x - mean, logvar), axis=-1)


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
    # A term with weight exactly 0 is 0 even where its softplus is infinite (x = 1, logit = +inf).
    ones = jnp.where(x == 0, 0.0, x * jax.nn.softplus(-logits))
    zeros = jnp.where(x == 1, 0.0, (1.0 - x) * jax.nn.softplus(logits))
    return -jnp.sum(ones + zeros, axis=-1)


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
    return 0.5 * jnp.sum(
        jnp.expm1(r) - r + _squared_distance_over_variance(mean_q - mean_p, logvar_p), axis=-1
    )


def continuous_bernoulli_log_norm(logits: jax.Array) -> jax.Array:
    """Log of the continuous Bernoulli normalizer ``C(lambda)``, elementwise (no reduction).

    ``C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)`` (Loaiza-Ganem & Cunningham 2019),
    ``C(1/2) = 2``. With ``lambda = sigmoid(l)``, ``1 - 2 lambda = -tanh(l / 2)``, so
    ``C = l / tanh(l / 2) = 2 t / tanh(t)`` with ``t = |l| / 2``. Near ``t = 0`` (``t < 0.1``) the Taylor
    series ``log(t / tanh t) = t^2/3 - 7 t^4/90`` replaces the 0/0 form; elsewhere
    ``log tanh t = log1p(-e^{-2t}) - log1p(e^{-2t})`` stays accurate for large ``t``.
    Both branches get a safe argument, so gradients are finite everywhere.

    Args:
      logits: logits ``l`` of ``lambda``, any shape.

    Returns:
      ``log C(sigmoid(l))``, the shape of ``logits``.
    """
    t = 0.5 * jnp.abs(logits)
    small = t < 0.1
    t_big = jnp.where(small, 1.0, t)
    t_small = jnp.where(small, t, 0.0)
    e = jnp.exp(-2.0 * t_big)
    big = jnp.log(t_big) - (jnp.log1p(-e) - jnp.log1p(e))
    taylor = t_small**2 / 3.0 - 7.0 * t_small**4 / 90.0
    return math.log(2.0) + jnp.where(small, taylor, big)


def continuous_bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Continuous Bernoulli log-density on [0, 1], summed over the last axis.

    ``log p(x) = sum_d [x_d log lambda_d + (1 - x_d) log(1 - lambda_d) + log C(lambda_d)]``: the Bernoulli
    cross-entropy (``bernoulli_log_prob``) plus the log-normalizer that makes it integrate to 1 over [0, 1].

    Args:
      x: values in [0, 1], shape ``(..., D)``.
      logits: logits of ``lambda``, broadcastable to ``x`` (a scalar, or with ``x``'s last axis).

    Returns:
      Log-densities of shape ``(...)``.
    """
    x, logits = _checks.event_arrays(x=x, logits=logits)
    shape = jnp.broadcast_shapes(x.shape, logits.shape)
    log_norm = jnp.broadcast_to(continuous_bernoulli_log_norm(logits), shape)
    return bernoulli_log_prob(x, logits) + jnp.sum(log_norm, axis=-1)


def continuous_bernoulli_mean(logits: jax.Array) -> jax.Array:
    """Mean of the continuous Bernoulli, elementwise.

    ``E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda))``.

    In logits, ``1/2 + (coth(u) - 1/u) / 2`` with ``u = l / 2``; for ``|u| < 1/4`` the series
    ``coth(u) - 1/u = u/3 - u^3/45 + 2 u^5/945`` replaces the cancelling difference (error below ``1e-8``).
    """
    u = 0.5 * logits
    small = jnp.abs(u) < 0.25
    safe = jnp.where(small, 1.0, u)
    series = u / 3.0 - u**3 / 45.0 + 2.0 * u**5 / 945.0
    return 0.5 + 0.5 * jnp.where(small, series, 1.0 / jnp.tanh(safe) - 1.0 / safe)


def _log_sigmoid_difference(a: jax.Array, b: jax.Array) -> jax.Array:
    # log(sigmoid(a) - sigmoid(b)) for a > b, exactly:
    # sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b-a))
    return jax.nn.log_sigmoid(a) + jax.nn.log_sigmoid(-b) + jnp.log(-jnp.expm1(b - a))


def discretized_logistic_log_prob(
    x: jax.Array, mean: jax.Array, logvar: jax.Array, *, num_bins: int = 256
) -> jax.Array:
    """Log-probability of 8-bit data under a discretized logistic (Salimans et al. 2017), summed over ``D``.

    The data sit on the lattice ``x = k / (num_bins - 1)``, ``k = 0 .. num_bins - 1``; bin ``k`` gets the
    logistic's mass over ``[x - h, x + h]`` with ``h = 1 / (2 (num_bins - 1))``, and the edge bins take the
    tails (``k = 0``: ``(-inf, h]``; the last bin: ``[1 - h, inf)``), so the ``num_bins`` probabilities sum
    to 1. The logistic has location ``mean`` and scale ``s = exp(logvar / 2)`` (``logvar = log s^2``, the
    decoder's second output). Each bin's log-mass is computed without subtracting two CDFs:
    ``sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^{b - a})``.

    Args:
      x: values on the lattice, shape ``(..., D)`` (off-lattice values are not caught here).
      mean: locations, broadcastable to ``x``.
      logvar: ``log s^2``, broadcastable to ``x``.
      num_bins: the number of grey levels (256 for 8-bit data).

    Returns:
      Log-probabilities (nats) of shape ``(...)``.
    """
    x, mean, logvar = _checks.event_arrays(x=x, mean=mean, logvar=logvar)
    half = 0.5 / (num_bins - 1)
    inv_s = jnp.exp(-0.5 * logvar)
    a = (x + half - mean) * inv_s  # upper edge, standardized
    b = (x - half - mean) * inv_s  # lower edge
    first = x < half  # k = 0: mass of (-inf, h]
    last = x > 1.0 - half  # last bin: mass of [1 - h, inf)
    mid = _log_sigmoid_difference(jnp.where(last, b + 1.0, a), jnp.where(first, a - 1.0, b))
    log_p = jnp.where(first, jax.nn.log_sigmoid(a), jnp.where(last, jax.nn.log_sigmoid(-b), mid))
    return jnp.sum(log_p, axis=-1)


def discretized_logistic_mean(mean: jax.Array, logvar: jax.Array, *, num_bins: int = 256) -> jax.Array:
    """Exact mean of the discretized logistic, elementwise: ``sum_{k >= 1} P(x >= k / (n - 1)) / (n - 1)``.

    Args:
      mean, logvar: the distribution's parameters (see ``discretized_logistic_log_prob``), same shape ``S``.
      num_bins: the number of grey levels ``n``.

    Returns:
      Means in [0, 1], shape ``S`` (it costs ``n - 1`` sigmoids per element).
    """
    half = 0.5 / (num_bins - 1)
    edges = jnp.arange(1, num_bins) / (num_bins - 1) - half  # (n - 1,) lower edges of bins 1 .. n - 1
    mean, logvar = jnp.asarray(mean)[..., None], jnp.asarray(logvar)[..., None]  # S -> S + (1,)
    edges = edges.reshape((1,) * (mean.ndim - 1) + edges.shape)  # (1, ..., 1, n - 1): explicit rank
    upper_tail = jax.nn.sigmoid((mean - edges) * jnp.exp(-0.5 * logvar))  # S + (n - 1,)
    return jnp.sum(upper_tail, axis=-1) / (num_bins - 1)
