"""Objectives (layer 2): reparameterization, the ELBO and the importance-weighted bound.

The encoder and decoder come in as plain callables, so the same functions serve every model:

- ``encode(x) -> (mean, logvar)`` with ``x`` of shape ``(B, D)`` and outputs of shape ``(B, Z)``;
- ``decode(z) -> output`` with ``z`` of shape ``(N, Z)``: the parameters of ``p(x|z)`` for the likelihood
  named by ``likelihood`` (``vae_lib.likelihoods``): logits ``(N, D)`` for ``"bernoulli"``, a pair
  ``(mean, logvar)`` of shape ``(N, D)`` each for ``"gaussian"``.

Conditional models (a conditional VAE, Sohn et al. 2015) take a conditioning input ``y`` of shape
``(B, C)`` (one-hot labels): given ``y=...``, the functions call ``encode(x, y)`` and ``decode(z, y)``
instead, and the prior stays ``p(z)``.

The prior is ``p(z) = N(0, I)`` unless ``log_prior`` is given: a callable ``log_prior(z (..., Z)) -> (...)``
(a learned prior, ``vae_lib.priors``). With it, the KL term is the Monte Carlo estimate
``mean_s[log q(z_s|x) - log_prior(z_s)]`` on the same samples ``z_s`` as the reconstruction term (there is
no closed form); ``analytic_kl`` applies to ``N(0, I)`` only.

The encoder may also return a *posterior* object instead of ``(mean, logvar)`` (``vae_lib.posteriors``):
anything with ``sample(key, num_samples) -> z (K, B, Z)`` and ``log_prob(z) -> (K, B)`` (and optionally
``sample_and_log_prob(key, num_samples)``, used when present), e.g. a normalizing flow. Its KL term is then
the Monte Carlo estimate ``mean_s[log q(z_s|x) - log p(z_s)]``, and the importance weights use its
``log q``. A tuple ``(mean, logvar)`` (``posteriors.DiagonalGaussian`` is one) takes the Gaussian path below,
with the same numbers as before.

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
from vae_lib.distributions import gaussian_log_prob, kl_standard_normal, standard_normal_log_prob
from vae_lib.likelihoods import LIKELIHOODS, log_likelihood

__all__ = [
    "LIKELIHOODS",  # kept here for code written before vae_lib.likelihoods existed
    "ElboTerms",
    "decode_samples",
    "elbo",
    "elbo_per_example",
    "iwae_bound",
    "log_importance_weights",
    "log_likelihood",
    "log_mean_exp",
    "reparameterize",
]

Encoder = Callable[..., tuple[jax.Array, jax.Array]]
Decoder = Callable[..., Any]


class ElboTerms(NamedTuple):
    """Batch means of the ELBO and its parts (nats per example).

    Attributes:
      objective: what training maximizes: ``reconstruction - beta * kl`` (equals ``elbo`` when beta = 1
        and there are no free bits), or ``reconstruction - beta * sum_j max(free_bits, kl_j)``.
      elbo: ``reconstruction - kl``, the evidence lower bound itself, whatever beta and the free bits are.
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


def decode_samples(decode: Decoder, z: jax.Array, y: jax.Array | None = None) -> Any:
    """Decode ``K`` latents per example in one call of ``decode``.

    Args:
      decode: ``decode(z)`` (or ``decode(z, y)``) on a batch of latents ``(N, Z)``.
      z: latents of shape ``(K, B, Z)``.
      y: optional conditioning ``(B, C)``, repeated for each of the ``K`` samples.

    Returns:
      The decoder's output with leading axes ``(K, B)``: e.g. logits ``(K, B, D)``.
    """
    k, b, _ = z.shape
    z_flat = z.reshape(k * b, -1)  # (K, B, Z) -> (K * B, Z)
    if y is None:
        out = decode(z_flat)
    else:
        out = decode(z_flat, jnp.broadcast_to(y[None], (k, *y.shape)).reshape(k * b, -1))
    return jax.tree.map(lambda a: a.reshape(k, b, *a.shape[1:]), out)  # (K * B, ...) -> (K, B, ...)


def log_mean_exp(a: jax.Array, axis: int = 0) -> jax.Array:
    """``log mean_k exp(a_k)`` along ``axis``, computed stably with ``logsumexp``."""
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def _is_posterior(q: Any) -> bool:
    """Whether an encoder's output is a posterior object (not a ``(mean, logvar)`` tuple)."""
    return (
        not isinstance(q, tuple)
        and callable(getattr(q, "sample", None))
        and callable(getattr(q, "log_prob", None))
    )


def _encode(x: jax.Array, encode: Encoder, y: jax.Array | None) -> Any:
    """Check the arguments every objective shares and run the encoder: ``(B, D) -> (B, Z), (B, Z)``, or a
    posterior object (returned as it is; its shapes are checked when it is sampled)."""
    _checks.function("encode", encode)
    if y is not None:
        y = _checks.array("y", y, ndim=2)
        _checks.same_batch(("x", "y"), x, y)
    out = encode(x) if y is None else encode(x, y)
    if _is_posterior(out):
        return out
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "encode(x) must return (mean, logvar) or a posterior with methods sample(key, num_samples) and "
            f"log_prob(z) (vae_lib.posteriors), got {type(out).__name__}"
        )
    mean, logvar = out
    if mean.ndim != 2 or logvar.shape != mean.shape:
        raise ValueError(
            f"encode(x) must return (mean, logvar) of shape (B, Z), got {mean.shape} and {logvar.shape}"
        )
    _checks.same_batch(("x", "encode(x)"), x, mean)
    return mean, logvar


def _posterior_samples(key: jax.Array, x: jax.Array, q: Any, num_samples: int) -> tuple[jax.Array, jax.Array]:
    """``z (K, B, Z)`` from a posterior object and ``log q(z|x) (K, B)`` of the same draws."""
    if callable(getattr(q, "sample_and_log_prob", None)):
        z, log_q = q.sample_and_log_prob(key, num_samples)
    else:
        z = q.sample(key, num_samples)
        log_q = q.log_prob(z)
    if z.ndim != 3 or z.shape[:2] != (num_samples, x.shape[0]) or log_q.shape != z.shape[:2]:
        raise ValueError(
            f"a posterior's sample(key, {num_samples}) must give z of shape ({num_samples}, {x.shape[0]}, Z) "
            f"and log_prob(z) shape ({num_samples}, {x.shape[0]}), got {z.shape} and {log_q.shape}"
        )
    return z, log_q


def _kl_per_dimension(mean: jax.Array, logvar: jax.Array, z: jax.Array | None) -> jax.Array:
    """``KL(q(z_j|x) || p(z_j))`` for each latent dimension ``j``, shape ``(B, Z)``: analytic, or the Monte
    Carlo estimate ``mean_s[log q(z_sj|x) - log p(z_sj)]`` from samples ``z`` of shape ``(K, B, Z)``."""
    m, lv = mean[..., None], logvar[..., None]  # each dimension its own one-dimensional event
    if z is None:
        return kl_standard_normal(m, lv)
    zj = z[..., None]  # (K, B, Z, 1)
    return (gaussian_log_prob(zj, m[None], lv[None]) - standard_normal_log_prob(zj)).mean(axis=0)


def _elbo_parts(
    key, x, encode, decode, *, likelihood, analytic_kl, num_samples, y, log_prior=None, per_dimension=False
):
    """``(reconstruction (B,), kl per latent dimension (B, Z))``, the ELBO's terms for each example.

    With a ``log_prior`` or a posterior object, the KL does not split over dimensions: it comes back as one
    column ``(B, 1)`` (an error if ``per_dimension``, which free bits need)."""
    x = _checks.array("x", x, ndim=2)
    _checks.function("decode", decode)
    _checks.choice("likelihood", likelihood, tuple(LIKELIHOODS))
    _checks.boolean("analytic_kl", analytic_kl)
    num_samples = _checks.positive_int("num_samples", num_samples)
    q = _encode(x, encode, y)  # (B, D) -> (B, Z), (B, Z), or a posterior
    if _is_posterior(q):  # a flow, say: Monte Carlo KL to log_prior (N(0, I) by default), (B, 1)
        if per_dimension:
            raise ValueError(
                "free_bits needs a (mean, logvar) encoder: the KL of a posterior object (a flow) does not "
                "split over latent dimensions"
            )
        z, log_q = _posterior_samples(key, x, q, num_samples)  # (K, B, Z), (K, B)
        rec = log_likelihood(x[None], decode_samples(decode, z, y), likelihood).mean(axis=0)  # (B,)
        log_p = standard_normal_log_prob if log_prior is None else _checks.function("log_prior", log_prior)
        return rec, (log_q - log_p(z)).mean(axis=0)[:, None]
    mean, logvar = q
    z = reparameterize(key, mean, logvar, num_samples)  # (K, B, Z)
    rec = log_likelihood(x[None], decode_samples(decode, z, y), likelihood).mean(axis=0)  # (K, B) -> (B,)
    if log_prior is None:
        return rec, _kl_per_dimension(mean, logvar, None if analytic_kl else z)
    _checks.function("log_prior", log_prior)
    kl = gaussian_log_prob(z, mean[None], logvar[None]) - log_prior(z)  # (K, B): log q(z_s|x) - log p(z_s)
    return rec, kl.mean(axis=0)[:, None]  # (B, 1)


def elbo_per_example(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    analytic_kl: bool = True,
    num_samples: int = 1,
    y: jax.Array | None = None,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The ELBO's two terms for each example.

    ``ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))``, the expectation estimated with
    ``num_samples`` reparameterized samples; the KL is analytic, or ``mean_s[log q(z_s|x) - log p(z_s)]``
    with the same samples when ``analytic_kl=False``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      likelihood: a name in ``vae_lib.likelihoods.LIKELIHOODS``.
      analytic_kl: closed-form KL (lower variance) or its Monte Carlo estimate.
      num_samples: samples of ``z`` per example.
      y: optional conditioning, shape ``(B, C)``.
      log_prior: ``log p(z)``, ``(..., Z) -> (...)``; ``None`` for ``N(0, I)``. Given, the KL is the Monte
        Carlo estimate whatever ``analytic_kl`` says.

    Returns:
      ``(reconstruction, kl)``, each of shape ``(B,)``; the ELBO is their difference.
    """
    rec, kl = _elbo_parts(
        key,
        x,
        encode,
        decode,
        likelihood=likelihood,
        analytic_kl=analytic_kl,
        num_samples=num_samples,
        y=y,
        log_prior=log_prior,
    )
    return rec, kl.sum(axis=-1)


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    beta: float | jax.Array = 1.0,
    analytic_kl: bool = True,
    num_samples: int = 1,
    free_bits: float | jax.Array | None = None,
    y: jax.Array | None = None,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> ElboTerms:
    """The (beta-weighted) ELBO, averaged over the batch, optionally with free bits.

    ``objective = mean_b E_q log p(x_b|z) - beta * mean_b KL(q(z|x_b) || p(z))``; see ``elbo_per_example``.
    With ``free_bits = lam`` (Kingma et al., 2016), the KL term of the objective is
    ``sum_j max(lam, mean_b KL_j)`` instead, ``KL_j`` the KL of latent dimension ``j``: a dimension whose
    batch-mean KL is below ``lam`` nats is not pushed further towards the prior. The ``elbo``,
    ``reconstruction`` and ``kl`` returned stay the true ones. Sums over data and latent dimensions, mean
    over the batch. Training minimizes ``-objective``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      likelihood: a name in ``vae_lib.likelihoods.LIKELIHOODS``.
      beta: weight of the KL term (beta-VAE), >= 0; a Python float or a scalar array (e.g. the value of a
        schedule inside a compiled training step).
      analytic_kl: closed-form KL or its Monte Carlo estimate.
      num_samples: samples of ``z`` per example.
      free_bits: ``lam >= 0``, nats per latent dimension, or ``None`` for none (needs ``N(0, I)``: a
        learned prior's KL does not split over dimensions).
      y: optional conditioning, shape ``(B, C)``.
      log_prior: ``log p(z)``, ``(..., Z) -> (...)``; ``None`` for ``N(0, I)``. Given, the KL is the Monte
        Carlo estimate whatever ``analytic_kl`` says.

    Returns:
      ``ElboTerms(objective, elbo, reconstruction, kl)``, scalars.
    """
    beta = _checks.real_or_scalar_array("beta", beta, minimum=0.0)
    if free_bits is not None:
        free_bits = _checks.real_or_scalar_array("free_bits", free_bits, minimum=0.0)
        if log_prior is not None:
            raise ValueError(
                "free_bits needs the standard-normal prior (log_prior=None): the KL to a learned prior "
                "does not split over latent dimensions"
            )
    rec, kl_dims = _elbo_parts(
        key,
        x,
        encode,
        decode,
        likelihood=likelihood,
        analytic_kl=analytic_kl,
        num_samples=num_samples,
        y=y,
        log_prior=log_prior,
        per_dimension=free_bits is not None,
    )
    rec, kl = rec.mean(), kl_dims.sum(axis=-1).mean()  # (B,) -> (), (B, Z) -> ()
    penalty = kl if free_bits is None else jnp.maximum(free_bits, kl_dims.mean(axis=0)).sum()
    return ElboTerms(objective=rec - beta * penalty, elbo=rec - kl, reconstruction=rec, kl=kl)


def log_importance_weights(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    num_samples: int,
    likelihood: str = "bernoulli",
    y: jax.Array | None = None,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Log importance weights ``log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x)``, ``z_s ~ q(z|x)``.

    ``mean_s w_s`` is an unbiased estimate of ``p(x)``; ``mean_s log w_s`` of the ELBO. The one place the
    weights are computed: ``iwae_bound``, IWAE training in ``fit`` and ``importance_log_likelihood`` use it.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      num_samples: ``K >= 1`` samples per example.
      likelihood: a name in ``vae_lib.likelihoods.LIKELIHOODS``.
      y: optional conditioning, shape ``(B, C)``.
      log_prior: ``log p(z)``, ``(..., Z) -> (...)``; ``None`` for ``N(0, I)``.

    Returns:
      Log weights of shape ``(K, B)``.
    """
    x = _checks.array("x", x, ndim=2)
    _checks.function("decode", decode)
    _checks.choice("likelihood", likelihood, tuple(LIKELIHOODS))
    k = _checks.positive_int("num_samples", num_samples)
    q = _encode(x, encode, y)  # (B, Z) each, or a posterior
    if _is_posterior(q):
        z, log_q = _posterior_samples(key, x, q, k)  # (K, B, Z), (K, B)
    else:
        mean, logvar = q
        z = reparameterize(key, mean, logvar, k)  # (K, B, Z)
        log_q = None
    if log_prior is None:
        log_prior = standard_normal_log_prob
    _checks.function("log_prior", log_prior)
    if log_q is None:  # the diagonal Gaussian, exactly as before posteriors existed
        log_q = gaussian_log_prob(z, mean[None], logvar[None])
    return log_likelihood(x[None], decode_samples(decode, z, y), likelihood) + log_prior(z) - log_q  # (K, B)


def iwae_bound(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    num_samples: int,
    likelihood: str = "bernoulli",
    y: jax.Array | None = None,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """The importance-weighted bound ``IWAE_k`` (Burda et al., 2016) for each example.

    ``IWAE_k(x) = log (1/k) sum_s p(x|z_s) p(z_s) / q(z_s|x)`` with ``z_s ~ q(z|x)``: the log-mean-exp of
    ``log_importance_weights``. ``IWAE_1`` is the ELBO; ``E[IWAE_k]`` rises with ``k`` towards ``log p(x)``.

    Args:
      key: PRNG key.
      x: data, shape ``(B, D)``.
      encode, decode: see the module docstring.
      num_samples: ``k >= 1``.
      likelihood: a name in ``vae_lib.likelihoods.LIKELIHOODS``.
      y: optional conditioning, shape ``(B, C)``.
      log_prior: ``log p(z)``, ``(..., Z) -> (...)``; ``None`` for ``N(0, I)``.

    Returns:
      Bounds of shape ``(B,)`` (no batch reduction).
    """
    log_w = log_importance_weights(
        key, x, encode, decode, num_samples=num_samples, likelihood=likelihood, y=y, log_prior=log_prior
    )
    return log_mean_exp(log_w, axis=0)  # (K, B) -> (B,)
