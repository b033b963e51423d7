"""Evaluation (layer 4): test ELBO, importance-sampled and exact (quadrature) log-likelihood.

All functions take a model with ``encode``/``decode``/``likelihood`` (``vae_lib.models.VAE``), work in
chunks so memory stays bounded, and compile once per model structure (the model's NNX graph definition
is a static argument of the jitted kernels).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib import _checks
from vae_lib.distributions import gaussian_log_prob, standard_normal_log_prob
from vae_lib.objectives import ElboTerms, elbo_per_example, log_likelihood


def _check_data(model, x, name: str = "x") -> jax.Array:
    if not (isinstance(model, nnx.Module) and hasattr(model, "likelihood")):
        raise TypeError(f"model must be a vae_lib VAE (e.g. mlp_vae(...)), got {type(model).__name__}")
    x = _checks.array(name, x, ndim=2)
    data_dim = getattr(model, "data_dim", None)
    if data_dim is not None and x.shape[1] != data_dim:
        raise ValueError(f"{name} must have shape (N, {data_dim}) for this model, got {tuple(x.shape)}")
    if model.likelihood == "bernoulli":
        _checks.in_unit_interval(name, x)
    return x


def _pad_chunks(x: jax.Array, size: int) -> tuple[jax.Array, int]:
    """Pad ``(N, D)`` with copies of row 0 to a multiple of ``size`` and reshape to ``(C, size, D)``."""
    n = x.shape[0]
    pad = (-n) % size
    xp = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, x.shape[1]))]) if pad else x
    return xp.reshape(-1, size, x.shape[1]), n


@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "num_samples", "analytic_kl"))
def _elbo_chunks(graphdef, state, key, chunks, *, likelihood, num_samples, analytic_kl):
    model = nnx.merge(graphdef, state)
    keys = jax.random.split(key, chunks.shape[0])

    def one(args):
        k, xb = args
        return elbo_per_example(
            k,
            xb,
            model.encode,
            model.decode,
            likelihood=likelihood,
            analytic_kl=analytic_kl,
            num_samples=num_samples,
        )

    rec, kl = jax.lax.map(one, (keys, chunks))
    return rec.reshape(-1), kl.reshape(-1)


def evaluate_elbo(
    key: jax.Array,
    model,
    x: jax.Array,
    *,
    batch_size: int = 500,
    num_samples: int = 1,
    analytic_kl: bool = True,
) -> ElboTerms:
    """The ELBO of a data set: mean over examples of a Monte Carlo estimate with ``z ~ q(z|x)``.

    Uses samples of ``z``, never the posterior mean, so it is an unbiased estimate of the ELBO.

    Args:
      key: PRNG key.
      model: a ``VAE``.
      x: data, shape ``(N, D)``; binary for a Bernoulli decoder.
      batch_size: examples per chunk (memory only, not the result).
      num_samples: samples of ``z`` per example.
      analytic_kl: closed-form KL or its Monte Carlo estimate.

    Returns:
      ``ElboTerms`` of dataset means (``objective`` equals ``elbo``: beta = 1).
    """
    key = _checks.key("key", key)
    x = _check_data(model, x)
    batch_size = min(_checks.positive_int("batch_size", batch_size), x.shape[0])
    num_samples = _checks.positive_int("num_samples", num_samples)
    analytic_kl = _checks.boolean("analytic_kl", analytic_kl)
    graphdef, state = nnx.split(model)
    chunks, n = _pad_chunks(x, batch_size)
    rec, kl = _elbo_chunks(
        graphdef,
        state,
        key,
        chunks,
        likelihood=model.likelihood,
        num_samples=num_samples,
        analytic_kl=analytic_kl,
    )
    rec, kl = rec[:n].mean(), kl[:n].mean()
    return ElboTerms(objective=rec - kl, elbo=rec - kl, reconstruction=rec, kl=kl)


@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "num_chunks", "chunk"))
def _iwae_chunks(graphdef, state, key, chunks, *, likelihood, num_chunks, chunk):
    model = nnx.merge(graphdef, state)
    keys = jax.random.split(key, chunks.shape[0])

    def per_batch(args):
        kb, xb = args  # (B, D)
        mean, logvar = model.encode(xb)  # (B, Z)

        def per_samples(carry, ks):
            z = mean[None] + jnp.exp(0.5 * logvar[None]) * jax.random.normal(
                ks, (chunk, *mean.shape)
            )  # (S, B, Z)
            out = model.decode(z.reshape(-1, z.shape[-1]))
            out = jax.tree.map(lambda a: a.reshape(chunk, xb.shape[0], -1), out)
            log_w = (
                log_likelihood(xb[None], out, likelihood)
                + standard_normal_log_prob(z)
                - gaussian_log_prob(z, mean[None], logvar[None])
            )  # (S, B)
            return jnp.logaddexp(carry, jax.nn.logsumexp(log_w, axis=0)), None

        init = jnp.full((xb.shape[0],), -jnp.inf)
        total, _ = jax.lax.scan(per_samples, init, jax.random.split(kb, num_chunks))
        return total

    return jax.lax.map(per_batch, (keys, chunks)).reshape(-1)


def importance_log_likelihood(
    key: jax.Array,
    model,
    x: jax.Array,
    *,
    num_samples: int = 1000,
    batch_size: int = 100,
    sample_chunk: int = 100,
) -> jax.Array:
    """Importance-sampled estimate of ``log p(x)`` per example (``IWAE_k`` with the encoder as proposal).

    ``log p(x) ~= log (1/k) sum_s p(x|z_s) p(z_s) / q(z_s|x)``, ``z_s ~ q(z|x)``, accumulated over chunks
    of samples with ``logaddexp``. A lower bound in expectation that tightens as ``k`` grows.

    Args:
      key: PRNG key.
      model: a ``VAE``.
      x: data, shape ``(N, D)``.
      num_samples: ``k``, a multiple of ``sample_chunk`` (or smaller than it).
      batch_size: examples per chunk (memory only).
      sample_chunk: samples decoded at once (memory only).

    Returns:
      Estimates of shape ``(N,)`` in nats.
    """
    key = _checks.key("key", key)
    x = _check_data(model, x)
    k = _checks.positive_int("num_samples", num_samples)
    batch_size = min(_checks.positive_int("batch_size", batch_size), x.shape[0])
    chunk = min(_checks.positive_int("sample_chunk", sample_chunk), k)
    if k % chunk:
        raise ValueError(f"num_samples ({k}) must be a multiple of sample_chunk ({chunk})")
    graphdef, state = nnx.split(model)
    chunks, n = _pad_chunks(x, batch_size)
    total = _iwae_chunks(
        graphdef, state, key, chunks, likelihood=model.likelihood, num_chunks=k // chunk, chunk=chunk
    )
    return total[:n] - math.log(k)


def latent_grid(latent_dim: int, num_points: int, bound: float) -> tuple[jax.Array, float]:
    """A regular grid over ``[-bound, bound]^latent_dim`` (cell midpoints) and the log of a cell's volume.

    Returns:
      ``(z, log_cell)`` with ``z`` of shape ``(num_points ** latent_dim, latent_dim)``.
    """
    latent_dim = _checks.positive_int("latent_dim", latent_dim)
    num_points = _checks.positive_int("num_points", num_points)
    bound = _checks.real("bound", bound, minimum=0.0, strict=True)
    h = 2.0 * bound / num_points
    axis = -bound + h * (jnp.arange(num_points) + 0.5)
    mesh = jnp.meshgrid(*([axis] * latent_dim), indexing="ij")
    return jnp.stack([m.reshape(-1) for m in mesh], axis=-1), latent_dim * math.log(h)


def _pairwise_log_likelihood(x: jax.Array, out, likelihood: str) -> jax.Array:
    """``log p(x_n | z_g)`` for every pair, shape ``(N, G)``, written as matrix products."""
    if likelihood == "bernoulli":
        return x @ out.T - jnp.sum(jax.nn.softplus(out), axis=-1)[None, :]  # (N, D) @ (D, G)
    mean, logvar = out  # (G, D)
    prec = jnp.exp(-logvar)
    quad = (x**2) @ prec.T - 2.0 * x @ (mean * prec).T + jnp.sum(mean**2 * prec, axis=-1)[None, :]
    return -0.5 * (quad + jnp.sum(logvar, axis=-1)[None, :] + x.shape[-1] * math.log(2 * math.pi))


@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "grid_chunk"))
def _quadrature(graphdef, state, x, z, log_cell, *, likelihood, grid_chunk):
    model = nnx.merge(graphdef, state)
    zc = z.reshape(-1, grid_chunk, z.shape[-1])

    def body(carry, zg):
        terms = (
            _pairwise_log_likelihood(x, model.decode(zg), likelihood) + standard_normal_log_prob(zg)[None, :]
        )
        return jnp.logaddexp(carry, jax.nn.logsumexp(terms, axis=-1)), None

    total, _ = jax.lax.scan(body, jnp.full((x.shape[0],), -jnp.inf), zc)
    return total + log_cell


def quadrature_log_likelihood(
    model,
    x: jax.Array,
    *,
    num_points: int = 400,
    bound: float = 6.0,
    grid_chunk: int = 1600,
) -> jax.Array:
    """Exact ``log p(x)`` (to grid accuracy) by the midpoint rule over a 1-D or 2-D latent.

    ``p(x) = int p(x|z) p(z) dz ~= sum_g p(x|z_g) p(z_g) * cell``, over ``num_points`` points per axis on
    ``[-bound, bound]``. The truncation error is at most the prior mass outside the box (about 2e-9 per
    axis for ``bound=6``) times ``max_z p(x|z)``; the grid error shrinks as ``num_points`` grows. No
    encoder is used, so this is an independent check of the ELBO and of importance sampling.

    Args:
      model: a ``VAE`` with ``latent_dim`` 1 or 2.
      x: data, shape ``(N, D)``.
      num_points: grid points per latent axis.
      bound: half-width of the grid, in prior standard deviations.
      grid_chunk: grid points decoded at once (memory only).

    Returns:
      ``log p(x)`` of shape ``(N,)`` in nats.
    """
    x = _check_data(model, x)
    num_points = _checks.positive_int("num_points", num_points)
    bound = _checks.real("bound", bound, minimum=0.0, strict=True)
    if model.latent_dim not in (1, 2):
        raise ValueError(
            f"quadrature needs a model with latent_dim 1 or 2, got latent_dim={model.latent_dim}"
        )
    z, log_cell = latent_grid(model.latent_dim, num_points, bound)
    g = z.shape[0]
    chunk = min(_checks.positive_int("grid_chunk", grid_chunk), g)
    while g % chunk:  # largest divisor of the grid size not above the requested chunk
        chunk -= 1
    graphdef, state = nnx.split(model)
    return _quadrature(graphdef, state, x, z, log_cell, likelihood=model.likelihood, grid_chunk=chunk)
