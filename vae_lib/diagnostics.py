"""Diagnostics of a trained encoder (layer 4): KL per latent dimension, active units, ELBO surgery, holes.

Most functions work on the posterior parameters of a data set, ``mean`` and ``logvar`` of shape
``(N, Z)`` (``encode_dataset`` computes them in chunks), so a chapter can also apply them to posteriors it
builds by hand:

- ``kl_per_dimension``: ``E_x KL(q(z_j|x) || p(z_j))`` for each latent dimension ``j``; they sum to the
  ELBO's KL term.
- ``active_units``: dimension ``j`` is active when ``Cov_x(E_q[z_j|x]) > 0.01`` (Burda et al., 2016), on
  the posterior means of a data set: ``encode_dataset``'s ``mean`` for a Gaussian encoder, or
  ``posterior_mean``, which also takes a model whose encoder returns a posterior object (a flow).
- ``elbo_surgery``: ``E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z))`` with ``q(z)`` the aggregate
  posterior (Hoffman & Johnson, 2016), estimated on the data set.
- ``hole_fraction``: the share of latent samples far from every training code (Chapter 1's definition).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_lib import _checks, _inputs
from vae_lib.distributions import gaussian_log_prob, kl_standard_normal, standard_normal_log_prob
from vae_lib.evaluation import _pad_chunks
from vae_lib.objectives import _is_posterior, reparameterize


def _gaussian_encode(model, *args) -> tuple[jax.Array, jax.Array]:
    """``model.encode(*args)``, which must be a ``(mean, logvar)`` pair (not a posterior object)."""
    q = model.encode(*args)
    if _is_posterior(q):
        raise TypeError(
            "encode_dataset needs an encoder that returns (mean, logvar); this one returns a posterior "
            f"object ({type(q).__name__}). For active units use posterior_mean(model, x, key=...)"
        )
    return q


@functools.partial(jax.jit, static_argnames="graphdef")
def _encode_chunks(graphdef, state, xs, ys):
    model = nnx.merge(graphdef, state)
    mean, logvar = jax.lax.map(
        lambda args: _gaussian_encode(model, *args), (xs, ys) if ys is not None else (xs,)
    )
    return mean.reshape(-1, mean.shape[-1]), logvar.reshape(-1, logvar.shape[-1])


def encode_dataset(model, x: jax.Array, *, y: jax.Array | None = None, batch_size: int = 500):
    """The posterior parameters of every example: ``x (N, D) -> mean, logvar (N, Z)``, in chunks.

    Args:
      model: a ``VAE``.
      x: data, shape ``(N, D)`` (checked as by ``evaluate_elbo``).
      y: labels of a conditional model: integers ``(N,)`` or one-hot rows ``(N, C)``.
      batch_size: examples per chunk (memory only).
    """
    x, y = _inputs.model_data(model, x, y)
    batch_size = min(_checks.positive_int("batch_size", batch_size), x.shape[0])
    graphdef, state = nnx.split(model)
    mean, logvar = _encode_chunks(graphdef, state, _pad_chunks(x, batch_size), _pad_chunks(y, batch_size))
    return mean[: x.shape[0]], logvar[: x.shape[0]]


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples"))
def _sampled_means(graphdef, state, key, xs, ys, *, num_samples):
    model = nnx.merge(graphdef, state)

    def one(x_row, *y_row):  # (D,) -> (Z,); key is not mapped: every example gets the same base draws
        q = model.encode(x_row[None], *(y[None] for y in y_row))  # a posterior of a batch of one
        return q.sample(key, num_samples)[:, 0].mean(axis=0)  # (K, 1, Z) -> (Z,)

    means = jax.lax.map(lambda args: jax.vmap(one)(*args), (xs, ys) if ys is not None else (xs,))
    return means.reshape(-1, means.shape[-1])


def posterior_mean(
    model,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    num_samples: int = 500,
    y: jax.Array | None = None,
    batch_size: int = 100,
) -> jax.Array:
    """``E_q[z | x]`` of every example, ``x (N, D) -> (N, Z)``: what ``active_units`` takes.

    For an encoder that returns ``(mean, logvar)`` this is ``mean`` (``encode_dataset``'s, exactly; ``key``
    is not used). For a posterior object (a flow, ``vae_lib.posteriors``), which has no closed-form mean, it
    is the Monte Carlo mean ``(1/S) sum_s z_s`` of ``S = num_samples`` draws ``z_s ~ q(z|x)``, made with the
    *same key for every example*: each example's posterior is sampled alone, so all of them get the same base
    noise (common random numbers). The Monte Carlo error is then largely shared by all examples and adds
    little to ``Var_x`` (independent draws would add ``E_x Var_q(z_j|x) / S`` to every activity), and a
    dimension whose posterior does not depend on ``x`` gets activity 0, as it should.

    Args:
      model: a ``VAE`` (any encoder).
      x: data, shape ``(N, D)`` (checked as by ``evaluate_elbo``).
      key: PRNG key, required when the encoder returns a posterior object.
      num_samples: draws per example for a posterior object.
      y: labels of a conditional model: integers ``(N,)`` or one-hot rows ``(N, C)``.
      batch_size: examples per chunk (memory: ``batch_size * num_samples`` latent draws at a time).

    Returns:
      Shape ``(N, Z)``.
    """
    x, y = _inputs.model_data(model, x, y)
    num_samples = _checks.positive_int("num_samples", num_samples)
    batch_size = min(_checks.positive_int("batch_size", batch_size), x.shape[0])
    probe = model.encode(x[:1]) if y is None else model.encode(x[:1], y[:1])
    if not _is_posterior(probe):
        return encode_dataset(model, x, y=y, batch_size=max(batch_size, 500))[0]
    if key is None:
        raise ValueError(
            "key is required: this model's encoder returns a posterior object "
            f"({type(probe).__name__}), whose mean posterior_mean estimates from samples"
        )
    key = _checks.key("key", key)
    graphdef, state = nnx.split(model)
    chunks = (_pad_chunks(x, batch_size), _pad_chunks(y, batch_size))
    return _sampled_means(graphdef, state, key, *chunks, num_samples=num_samples)[: x.shape[0]]


def _posterior(mean, logvar) -> tuple[jax.Array, jax.Array]:
    mean = _checks.array("mean", mean, ndim=2)
    logvar = _checks.array("logvar", logvar, ndim=2)
    _checks.same_shape(("mean", "logvar"), mean, logvar)
    return mean, logvar


def kl_per_dimension(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """``E_x KL(q(z_j|x) || N(0, 1))`` for each latent dimension ``j``, analytic, mean over the ``N`` rows.

    Args:
      mean, logvar: posterior parameters of a data set, shape ``(N, Z)``.

    Returns:
      Shape ``(Z,)``, nats; the sum is the data set's mean KL term of the ELBO.
    """
    mean, logvar = _posterior(mean, logvar)
    return kl_standard_normal(mean[..., None], logvar[..., None]).mean(axis=0)  # (N, Z) -> (Z,)


def active_units(mean: jax.Array, *, threshold: float = 0.01) -> tuple[int, jax.Array]:
    """Active latent dimensions (Burda et al., 2016): ``A_j = Cov_x(E_q[z_j | x]) > threshold``.

    Args:
      mean: posterior means of a data set, shape ``(N, Z)``.
      threshold: the activity above which a dimension counts as active (Burda et al. use 0.01).

    Returns:
      ``(number of active dimensions, activity A of shape (Z,))``; ``A_j`` is the variance over the data
      set of the posterior mean of ``z_j`` (divisor ``N``).
    """
    mean = _checks.array("mean", mean, ndim=2)
    threshold = _checks.real("threshold", threshold, minimum=0.0)
    activity = jnp.var(mean, axis=0)  # (N, Z) -> (Z,)
    return int(jnp.sum(activity > threshold)), activity


class ElboSurgery(NamedTuple):
    """``kl = mutual_information + marginal_kl`` (Hoffman & Johnson, 2016), nats; see ``elbo_surgery``.

    Attributes:
      kl: ``E_x KL(q(z|x) || p(z))``, analytic for ``N(0, I)``, else Monte Carlo.
      mutual_information: ``I(x; z)`` under ``q(x, z) = q(x) q(z|x)``, ``q(x)`` uniform on the data set.
      marginal_kl: ``KL(q(z) || p(z))``, ``q(z)`` the aggregate posterior.
      mutual_information_se, marginal_kl_se: their Monte Carlo standard errors.
    """

    kl: jax.Array
    mutual_information: jax.Array
    marginal_kl: jax.Array
    mutual_information_se: jax.Array
    marginal_kl_se: jax.Array


@functools.partial(jax.jit, static_argnames="num_samples")
def _surgery_terms(key, mean, logvar, *, num_samples):
    """``z (S, N, Z)``, ``log q(z_sn|x_n) (S, N)`` and ``log q(z_sn) (S, N)`` (the aggregate posterior)."""
    n, latent_dim = mean.shape
    z = reparameterize(key, mean, logvar, num_samples)  # (S, N, Z): z_sn ~ q(z | x_n)

    def log_aggregate(z_row):  # (Z,) -> log q(z) = log mean_m q(z | x_m), a scalar
        return jax.nn.logsumexp(gaussian_log_prob(z_row[None], mean, logvar)) - math.log(n)  # over (M,)

    rows = max(1, min(num_samples * n, 2**22 // (n * latent_dim)))  # (rows, M, Z) at a time
    log_q_agg = jax.lax.map(log_aggregate, z.reshape(-1, latent_dim), batch_size=rows).reshape(z.shape[:2])
    log_q_cond = gaussian_log_prob(z, mean[None], logvar[None])  # (S, N)
    return z, log_q_cond, log_q_agg


def elbo_surgery(
    key: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    *,
    num_samples: int = 1,
    log_prior: Callable[[jax.Array], jax.Array] | None = None,
) -> ElboSurgery:
    """The two parts of the ELBO's KL term on a data set (Hoffman & Johnson, 2016, "ELBO surgery").

    ``E_x KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z))``, with ``x`` uniform on the ``N`` examples and
    ``q(z) = (1/N) sum_m q(z|x_m)`` the aggregate posterior of the data set. Estimator: ``num_samples``
    draws ``z_sn ~ q(z|x_n)`` for every example ``n``; ``log q(z_sn)`` is the exact mixture over all ``N``
    posteriors (``O(N^2 Z)`` work); then ``I = mean_{s,n}[log q(z_sn|x_n) - log q(z_sn)]`` and
    ``KL(q(z) || p(z)) = mean_{s,n}[log q(z_sn) - log p(z_sn)]``, with standard errors over the ``S * N``
    terms. Both are exact for the data set's aggregate posterior up to Monte Carlo error; ``I <= log N``.
    Their sum estimates the analytic ``kl`` returned beside them.

    ``p(z)`` is ``N(0, I)``, or ``log_prior`` for a learned prior (pass ``model.log_prior``); ``kl`` is then
    the Monte Carlo estimate ``mean_{s,n}[log q(z_sn|x_n) - log p(z_sn)]`` on the same draws, which equals
    the sum of the two parts term by term.

    Args:
      key: PRNG key.
      mean, logvar: posterior parameters of the data set, shape ``(N, Z)`` (``encode_dataset``).
      num_samples: draws of ``z`` per example.
      log_prior: ``log p(z)``, ``(..., Z) -> (...)``, or ``None`` for ``N(0, I)``.

    Returns:
      ``ElboSurgery(kl, mutual_information, marginal_kl, mutual_information_se, marginal_kl_se)``.
    """
    key = _checks.key("key", key)
    mean, logvar = _posterior(mean, logvar)
    num_samples = _checks.positive_int("num_samples", num_samples)
    z, log_q_cond, log_q_agg = _surgery_terms(key, mean, logvar, num_samples=num_samples)
    log_p = standard_normal_log_prob(z) if log_prior is None else _checks.function("log_prior", log_prior)(z)
    info, marginal = log_q_cond - log_q_agg, log_q_agg - log_p  # (S, N) each
    se = lambda a: jnp.std(a) / math.sqrt(a.size)  # noqa: E731
    kl = kl_standard_normal(mean, logvar).mean() if log_prior is None else (log_q_cond - log_p).mean()
    return ElboSurgery(kl, info.mean(), marginal.mean(), se(info), se(marginal))


def _nearest_distance(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each row of ``a (N, D)`` to its nearest row of ``b (M, D)``, float64."""
    b2 = (b**2).sum(1)[None, :]
    out = [
        np.sqrt(
            np.maximum(((ac**2).sum(1)[:, None] + b2 - 2.0 * ac @ b.T).min(axis=1), 0.0)
        )  # (n, M) -> (n,)
        for ac in (a[i : i + chunk] for i in range(0, len(a), chunk))
    ]
    return np.concatenate(out)


def hole_fraction(z_samples, z_train, z_test, quantile: float = 0.99) -> float:
    """The share of ``z_samples`` in a hole: farther from every training code than ``quantile`` of the test
    codes are (Chapter 1's definition).

    ``radius = quantile_q(min_m |z_test_n - z_train_m|)``; the result is the fraction of samples ``s`` with
    ``min_m |z_s - z_train_m| > radius``. Distances are Euclidean, in float64.

    Args:
      z_samples: codes to test, shape ``(S, Z)``.
      z_train: training codes, shape ``(M, Z)``.
      z_test: held-out codes, shape ``(N, Z)``, which set the radius.
      quantile: in (0, 1].

    Returns:
      A fraction in [0, 1].
    """
    arrays = [np.asarray(_checks.array(n, a, ndim=2, finite=True), np.float64)
              for n, a in (("z_samples", z_samples), ("z_train", z_train), ("z_test", z_test))]  # fmt: skip
    z_samples, z_train, z_test = arrays
    if len({a.shape[1] for a in arrays}) > 1:
        raise ValueError(
            f"z_samples, z_train and z_test must have the same width, got {[a.shape for a in arrays]}"
        )
    quantile = _checks.real("quantile", quantile, minimum=0.0, strict=True)
    if quantile > 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile:g}")
    radius = np.quantile(_nearest_distance(z_test, z_train), quantile)
    return float(np.mean(_nearest_distance(z_samples, z_train) > radius))
