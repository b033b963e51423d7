"""Decoder likelihoods ``p(x|z)`` by name (layer 1: pure ``jax.numpy``, between densities and objectives).

A decoder outputs the parameters of ``p(x|z)`` for every data dimension; a likelihood turns them into
``log p(x|z)`` and ``E[x|z]``. One entry of ``LIKELIHOODS`` per likelihood:

- ``"bernoulli"``: the output is the logits, shape ``(..., D)``; binary data.
- ``"gaussian"``: the output is a pair ``(mean, logvar)``, each ``(..., D)``; real data.
- ``"continuous_bernoulli"``: the output is the logits; data in [0, 1] (Loaiza-Ganem & Cunningham 2019).
- ``"discretized_logistic"``: the output is a pair ``(mean, logvar)`` (location, ``log s^2``); 8-bit data on
  the lattice ``k / 255`` in [0, 1]; ``log_prob`` is a log-probability, not a density (Salimans et al. 2017).
- ``"gaussian_calibrated"``: the output is the mean; one variance shared by every dimension, set to its
  maximum-likelihood value, the mean squared error of the whole array it is given (the batch, and any
  sample axes): the calibrated decoder of the sigma-VAE (Rybkin et al. 2021). Its ``log_prob`` therefore
  couples the examples passed together (it is the only entry that does).

Adding a likelihood (say a continuous Bernoulli or a discretized logistic) is one ``log_prob`` function
and one entry here; the objectives, models, training and evaluation look it up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_lib import _checks
from vae_lib.distributions import (
    bernoulli_log_prob,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    discretized_logistic_log_prob,
    discretized_logistic_mean,
    gaussian_log_prob,
)

CALIBRATED_MIN_VARIANCE = 1e-6  # floor of the calibrated decoder's variance (sigma >= 1e-3)


class Likelihood(NamedTuple):
    """What the library needs to know about a likelihood ``p(x|z)``.

    Attributes:
      log_prob: ``(x, output) -> log p(x|z)``: ``x`` of shape ``(..., D)``, the decoder's ``output`` with the
        same event axis ``D``; summed over ``D``, shape ``(...)``.
      mean: ``output -> E[x|z]``, shape ``(..., D)``.
      data: the values ``x`` may take, checked where data enters the library: ``"binary"`` (0 or 1),
        ``"unit"`` (in [0, 1]) or ``"real"`` (any finite number).
      pair: whether the decoder outputs a pair ``(location, log-scale)`` (e.g. ``(mean, logvar)``) rather
        than one array.
    """

    log_prob: Callable[[jax.Array, Any], jax.Array]
    mean: Callable[[Any], jax.Array]
    data: str
    pair: bool


def _gaussian_log_prob(x: jax.Array, output: tuple[jax.Array, jax.Array]) -> jax.Array:
    mean, logvar = output
    return gaussian_log_prob(x, mean, logvar)


def _discretized_logistic_log_prob(x: jax.Array, output: tuple[jax.Array, jax.Array]) -> jax.Array:
    mean, logvar = output
    return discretized_logistic_log_prob(x, mean, logvar)


def calibrated_logvar(x: jax.Array, mean: jax.Array) -> jax.Array:
    """The sigma-VAE's shared log-variance ``log max(mean((x - mean)^2), 1e-6)`` over all elements (a scalar).

    For a Gaussian with one variance for all ``N`` values, ``sigma^2 = mean squared error`` maximizes the
    likelihood (Rybkin et al. 2021); the floor keeps a perfect reconstruction finite.
    """
    return jnp.log(jnp.maximum(jnp.mean((x - mean) ** 2), CALIBRATED_MIN_VARIANCE))


def _calibrated_log_prob(x: jax.Array, mean: jax.Array) -> jax.Array:
    return gaussian_log_prob(x, mean, calibrated_logvar(x, mean))


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood(bernoulli_log_prob, jax.nn.sigmoid, data="binary", pair=False),
    "gaussian": Likelihood(_gaussian_log_prob, lambda output: output[0], data="real", pair=True),
    "continuous_bernoulli": Likelihood(
        continuous_bernoulli_log_prob, continuous_bernoulli_mean, data="unit", pair=False
    ),
    "discretized_logistic": Likelihood(
        _discretized_logistic_log_prob,
        lambda output: discretized_logistic_mean(*output),
        data="unit",
        pair=True,
    ),
    "gaussian_calibrated": Likelihood(_calibrated_log_prob, lambda output: output, data="real", pair=False),
}


def get(likelihood: str) -> Likelihood:
    """The ``Likelihood`` registered under a name (a ``ValueError`` listing the names otherwise)."""
    _checks.choice("likelihood", likelihood, tuple(LIKELIHOODS))
    return LIKELIHOODS[likelihood]


def log_likelihood(x: jax.Array, output: Any, likelihood: str = "bernoulli") -> jax.Array:
    """``log p(x|z)`` from a decoder's output, summed over the data dimensions.

    Args:
      x: data, shape ``(B, D)`` (or ``(K, B, D)``, or any leading axes that broadcast against the output's).
      output: the decoder's output for ``B`` latents (or ``(K, B, ...)`` for ``K`` latents per example):
        logits for ``"bernoulli"``, a pair ``(mean, logvar)`` for ``"gaussian"``. Each array must have the
        event axis ``D`` of ``x`` exactly.
      likelihood: a name in ``LIKELIHOODS``.

    Returns:
      Log-likelihoods of shape ``(B,)`` (or ``(K, B)``).
    """
    lik = get(likelihood)
    if lik.pair and not (isinstance(output, tuple) and len(output) == 2):
        raise TypeError(
            f"a {likelihood} decoder must return a pair (location, log-scale), e.g. (mean, logvar)"
        )
    if not lik.pair and isinstance(output, tuple):
        raise TypeError(f"a {likelihood} decoder must return one array (e.g. logits), got a tuple")
    x = _checks.array("x", x, min_ndim=1)
    for a in output if lik.pair else (output,):
        a = _checks.array("the decoder output", a, min_ndim=1)
        if a.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"the decoder output must have the event axis of x, {x.shape[-1]}, got shape "
                f"{tuple(a.shape)} for x of shape {tuple(x.shape)}"
            )
    return lik.log_prob(x, output)
