"""Evaluation (layer 4): test ELBO, importance-sampled and exact (quadrature) log-likelihood.

All functions take a ``vae_lib.VAE`` (and, for a conditional model, its labels ``y``), check the model
and the data once (``vae_lib._inputs.model_data``), work in chunks so memory stays bounded, and compile
once per model structure (the model's NNX graph definition is a static argument of the jitted kernels).
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_lib import _checks, _inputs, sharding
from vae_lib.distributions import standard_normal_log_prob
from vae_lib.likelihoods import LIKELIHOODS
from vae_lib.objectives import ElboTerms, elbo_per_example, log_importance_weights

_MEMORY_NEEDS: dict = {}  # (kernel, arguments' structure, shapes and dtypes, options) -> bytes


def _free_memory() -> int | None:
    """Bytes the default device can still allocate: free accelerator memory, or the host's available
    memory for the CPU (``MemAvailable``); ``None`` where it cannot be read."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _memory_checked(hint: str):
    """Wrap a jitted kernel: before running it, compare XLA's estimate of the memory one call needs (its
    temporary buffers and outputs, from the compiled program) with the free memory, and raise a
    ``ValueError`` that says what to lower instead of letting XLA fail. The compiled program is the one
    the call then runs (JAX caches it), so results are unchanged; the estimate is cached per shape."""

    def wrap(kernel):
        @functools.wraps(kernel)
        def run(*args, **kwargs):
            leaves, tree = jax.tree.flatten(args)
            shapes = tuple((getattr(a, "shape", None), str(getattr(a, "dtype", type(a)))) for a in leaves)
            key = (kernel, tree, shapes, tuple(sorted(kwargs.items(), key=lambda item: item[0])))
            if key not in _MEMORY_NEEDS:
                if len(_MEMORY_NEEDS) > 256:
                    _MEMORY_NEEDS.clear()
                stats = kernel.lower(*args, **kwargs).compile().memory_analysis()
                _MEMORY_NEEDS[key] = (
                    None if stats is None else stats.temp_size_in_bytes + stats.output_size_in_bytes
                )
            need, free = _MEMORY_NEEDS[key], _free_memory()
            if need is not None and free is not None and need > free:
                raise ValueError(
                    f"this evaluation needs about {need / 2**30:.2f} GiB at once (XLA's estimate for one "
                    f"call), more than the {free / 2**30:.2f} GiB free: {hint}"
                )
            return kernel(*args, **kwargs)

        return run

    return wrap


def _pad_chunks(a: jax.Array | None, size: int) -> jax.Array | None:
    """Pad ``(N, ...)`` with copies of row 0 to a multiple of ``size``; reshape to ``(C, size, ...)``."""
    if a is None:
        return None
    pad = (-a.shape[0]) % size
    if pad:
        a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))])
    return a.reshape(-1, size, *a.shape[1:])


def _chunking(mesh, batch_size: int, x, y):
    """The examples per chunk (no more than the data needs) and, over several processes, all their rows.

    With a ``mesh`` the chunk's rows are split over its data axis, so their number must be a multiple of
    the axis size. Each process passes its own rows (as in ``fit``); they are gathered so that every
    process holds the same chunks, which the kernels then split over the devices (``_split``).
    """
    devices = 1 if mesh is None else sharding.check_mesh(mesh)
    if mesh is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        x, y = multihost_utils.process_allgather((x, y), tiled=True)
    batch_size = min(batch_size, -(-x.shape[0] // devices) * devices)
    if batch_size % devices:  # rounding it here would change the chunks, hence the samples drawn
        raise ValueError(
            f"batch_size ({batch_size}) must be a multiple of the mesh's data axis size ({devices}) "
            f"(e.g. {-(-batch_size // devices) * devices})"
        )
    return batch_size, x, y


def _split(mesh, xs, ys):
    """The chunks' rows split over the mesh's data axis (a sharding constraint; no-op without a mesh)."""
    if mesh is None:
        return xs, ys
    return jax.lax.with_sharding_constraint((xs, ys), sharding.rows(mesh, 3, axis=1))


def _gather(mesh, out):
    """Per-example results put back whole on every device, so that every process can read them."""
    return out if mesh is None else jax.lax.with_sharding_constraint(out, sharding.replicated(mesh))


def _replicate(mesh, tree):
    return tree if mesh is None else sharding.replicate(mesh, tree)


@_memory_checked("lower batch_size (examples per chunk)")
@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "num_samples", "analytic_kl", "mesh"))
def _elbo_chunks(graphdef, state, key, xs, ys, *, likelihood, num_samples, analytic_kl, mesh):
    model = nnx.merge(graphdef, state)
    xs, ys = _split(mesh, xs, ys)
    keys = jax.random.split(key, xs.shape[0])

    def one(args):
        k, xb, yb = args  # (B, D), (B, C) or None
        return elbo_per_example(
            k,
            xb,
            model.encode,
            model.decode,
            likelihood=likelihood,
            analytic_kl=analytic_kl,
            num_samples=num_samples,
            y=yb,
            log_prior=model.log_prior,
        )

    rec, kl = jax.lax.map(one, (keys, xs, ys))  # (C, B) each
    return _gather(mesh, (rec.reshape(-1), kl.reshape(-1)))


def evaluate_elbo(
    key: jax.Array,
    model,
    x: jax.Array,
    *,
    y: jax.Array | None = None,
    batch_size: int = 500,
    num_samples: int = 1,
    analytic_kl: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> ElboTerms:
    """The ELBO of a data set: mean over examples of a Monte Carlo estimate with ``z ~ q(z|x)``.

    Uses samples of ``z``, never the posterior mean, so it is an unbiased estimate of the ELBO.

    Args:
      key: PRNG key.
      model: a ``VAE``.
      x: data, shape ``(N, D)``; binary for a Bernoulli decoder.
      y: labels of a conditional model: integers ``(N,)`` or one-hot rows ``(N, C)``.
      batch_size: examples per chunk (memory only, not the result).
      num_samples: samples of ``z`` per example.
      analytic_kl: closed-form KL or its Monte Carlo estimate (always the estimate for a learned prior).
      mesh: split each chunk's examples over this mesh's ``"data"`` axis (as ``fit(..., mesh=)`` does);
        ``batch_size`` must then be a multiple of the axis size; with several processes, each passes its
        own rows. The result equals the one without a mesh (the same chunks, so the same samples).

    Returns:
      ``ElboTerms`` of dataset means (``objective`` equals ``elbo``: beta = 1).
    """
    key = _checks.key("key", key)
    x, y = _inputs.model_data(model, x, y)
    num_samples = _checks.positive_int("num_samples", num_samples)
    analytic_kl = _checks.boolean("analytic_kl", analytic_kl)
    batch_size, x, y = _chunking(mesh, _checks.positive_int("batch_size", batch_size), x, y)
    graphdef, state = nnx.split(model)
    rec, kl = _elbo_chunks(
        graphdef,
        *_replicate(mesh, (state, key, _pad_chunks(x, batch_size), _pad_chunks(y, batch_size))),
        likelihood=model.likelihood,
        num_samples=num_samples,
        analytic_kl=analytic_kl,
        mesh=mesh,
    )
    n = x.shape[0]
    rec, kl = rec[:n].mean(), kl[:n].mean()
    return ElboTerms(objective=rec - kl, elbo=rec - kl, reconstruction=rec, kl=kl)


@_memory_checked("lower sample_chunk (samples decoded at once) or batch_size (examples per chunk)")
@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "num_chunks", "chunk", "mesh"))
def _iwae_chunks(graphdef, state, key, xs, ys, *, likelihood, num_chunks, chunk, mesh):
    model = nnx.merge(graphdef, state)
    xs, ys = _split(mesh, xs, ys)

    def per_batch(args):
        kb, xb, yb = args  # (B, D), (B, C) or None

        def per_samples(total, ks):  # log sum_s w_s over the chunks so far, (B,)
            log_w = log_importance_weights(
                ks,
                xb,
                model.encode,
                model.decode,
                num_samples=chunk,
                likelihood=likelihood,
                y=yb,
                log_prior=model.log_prior,
            )  # (S, B)
            return jnp.logaddexp(total, jax.nn.logsumexp(log_w, axis=0)), None

        init = jnp.full((xb.shape[0],), -jnp.inf)
        total, _ = jax.lax.scan(per_samples, init, jax.random.split(kb, num_chunks))
        return total

    keys = jax.random.split(key, xs.shape[0])
    return _gather(mesh, jax.lax.map(per_batch, (keys, xs, ys)).reshape(-1))


def importance_log_likelihood(
    key: jax.Array,
    model,
    x: jax.Array,
    *,
    y: jax.Array | None = None,
    num_samples: int = 1000,
    batch_size: int = 100,
    sample_chunk: int = 100,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """Importance-sampled estimate of ``log p(x)`` per example (``IWAE_k`` with the encoder as proposal).

    ``log p(x) ~= log (1/k) sum_s w_s`` with ``log w_s`` from ``vae_lib.objectives.log_importance_weights``
    (``z_s ~ q(z|x)``), accumulated over chunks of samples with ``logaddexp``. A lower bound in
    expectation that tightens as ``k`` grows. For a conditional model it estimates ``log p(x|y)``.

    Args:
      key: PRNG key.
      model: a ``VAE``.
      x: data, shape ``(N, D)``.
      y: labels of a conditional model: integers ``(N,)`` or one-hot rows ``(N, C)``.
      num_samples: ``k``, a multiple of ``sample_chunk`` (or smaller than it).
      batch_size: examples per chunk (memory only).
      sample_chunk: samples decoded at once (memory only).
      mesh: split each chunk's examples over this mesh's ``"data"`` axis (see ``evaluate_elbo``).

    Returns:
      Estimates of shape ``(N,)`` in nats.
    """
    key = _checks.key("key", key)
    x, y = _inputs.model_data(model, x, y)
    k = _checks.positive_int("num_samples", num_samples)
    chunk = min(_checks.positive_int("sample_chunk", sample_chunk), k)
    if k % chunk:
        raise ValueError(f"num_samples ({k}) must be a multiple of sample_chunk ({chunk})")
    batch_size, x, y = _chunking(mesh, _checks.positive_int("batch_size", batch_size), x, y)
    graphdef, state = nnx.split(model)
    total = _iwae_chunks(
        graphdef,
        *_replicate(mesh, (state, key, _pad_chunks(x, batch_size), _pad_chunks(y, batch_size))),
        likelihood=model.likelihood,
        num_chunks=k // chunk,
        chunk=chunk,
        mesh=mesh,
    )
    return total[: x.shape[0]] - math.log(k)


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


def _pairwise_log_likelihood(x: jax.Array, output, likelihood: str) -> jax.Array:
    """``log p(x_n | z_g)`` for every example ``n`` and latent ``g``, shape ``(N, G)``.

    ``output`` is the decoder's output for ``G`` latents (e.g. logits ``(G, D)``). The density is the
    likelihood's own ``log_prob``, applied to one data dimension at a time (an ``(N, 1, 1)`` slice of ``x``
    against a ``(1, G, 1)`` slice of the output) and summed over the ``D`` dimensions: exact for any
    likelihood that factorizes over dimensions, with ``N x G`` numbers in memory. For ``"bernoulli"`` it is
    the same sum, ``-sum_d [x_d softplus(-l_d) + (1 - x_d) softplus(l_d)]``, written as two matrix products
    of non-negative terms (no cancellation, so as accurate as ``bernoulli_log_prob``). A Gaussian is never
    expanded as ``x^2 - 2 x mean + mean^2``, which loses every digit in float32 when ``|x|`` and ``|mean|``
    are large next to the standard deviation.
    """
    if likelihood == "bernoulli":
        return -(x @ jax.nn.softplus(-output).T + (1.0 - x) @ jax.nn.softplus(output).T)  # (N, D) @ (D, G)
    log_prob = LIKELIHOODS[likelihood].log_prob
    g = jax.tree.leaves(output)[0].shape[0]

    def add_dimension(total, d):  # + log p(x_nd | z_g) of data dimension d, (N, G)
        x_d = jax.lax.dynamic_index_in_dim(x, d, axis=1)[:, None, :]  # (N, 1, 1)
        out_d = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, d, axis=1)[None], output)  # (1, G, 1)
        return total + log_prob(x_d, out_d), None

    total, _ = jax.lax.scan(add_dimension, jnp.zeros((x.shape[0], g), x.dtype), jnp.arange(x.shape[1]))
    return total


class CoarseGridWarning(UserWarning):
    """``quadrature_log_likelihood``'s grid is too coarse for some example's posterior."""


def _check_resolution(model, x, y, num_points: int, bound: float, action: str) -> None:
    """Warn or raise when the grid spacing is too coarse for the encoder's posterior scale (see
    ``quadrature_log_likelihood``)."""
    h = 2.0 * bound / num_points
    q = model.encode(x) if y is None else model.encode(x, y)
    if not isinstance(q, tuple):  # a posterior object (vae_lib.posteriors): the scale of its base Gaussian
        q = getattr(q, "base", None)
        if not isinstance(q, tuple):
            return  # no scale to check against
    _, logvar = q  # (N, Z)
    std = np.exp(0.5 * np.asarray(logvar, dtype=np.float64))
    error = np.sum(2.0 * np.exp(-2.0 * math.pi**2 * (std / h) ** 2), axis=-1)  # relative, per example
    bad = error > 1e-3
    if not bad.any():
        return
    smallest = float(std.min())
    need = math.ceil(2.0 * bound / (smallest / 0.65))  # s >= 0.65 h: relative error < 5e-4 per axis
    message = (
        f"the quadrature grid (num_points={num_points}, spacing {h:.3g}) is too coarse for {int(bad.sum())} "
        f"of {bad.size} examples: their posterior standard deviation (the encoder's) is down to "
        f"{smallest:.3g}, so the midpoint rule can be far off (an estimated relative error of p(x) of "
        f"{float(error.max()):.2g} or more). Use num_points >= {need} (or a smaller bound), or "
        "importance_log_likelihood"
    )
    if action == "raise":
        raise ValueError(message)
    warnings.warn(message, CoarseGridWarning, stacklevel=3)


@_memory_checked("lower grid_chunk (grid points decoded at once) or pass fewer examples at a time")
@functools.partial(jax.jit, static_argnames=("graphdef", "likelihood", "grid_chunk"))
def _quadrature(graphdef, state, x, y_row, z, log_cell, *, likelihood, grid_chunk):
    model = nnx.merge(graphdef, state)

    def body(total, zg):  # zg: (G, Z), a chunk of the grid
        labels = () if y_row is None else (jnp.broadcast_to(y_row, (zg.shape[0], y_row.shape[0])),)
        terms = _pairwise_log_likelihood(x, model.decode(zg, *labels), likelihood)  # (N, G)
        log_prior = model.log_prior or standard_normal_log_prob  # the model's prior, N(0, I) by default
        terms = terms + log_prior(zg)[None, :]  # log p(x_n | z_g) + log p(z_g)
        return jnp.logaddexp(total, jax.nn.logsumexp(terms, axis=-1)), None

    total, _ = jax.lax.scan(body, jnp.full((x.shape[0],), -jnp.inf), z.reshape(-1, grid_chunk, z.shape[-1]))
    return total + log_cell


def quadrature_log_likelihood(
    model,
    x: jax.Array,
    *,
    y: jax.Array | None = None,
    num_points: int = 400,
    bound: float = 6.0,
    grid_chunk: int = 1600,
    coarse_grid: str = "warn",
) -> jax.Array:
    """Exact ``log p(x)`` (to grid accuracy) by the midpoint rule over a 1-D or 2-D latent.

    ``p(x) = int p(x|z) p(z) dz ~= sum_g p(x|z_g) p(z_g) * cell``, over ``num_points`` points per axis on
    ``[-bound, bound]``. The truncation error is at most the prior mass outside the box (about 2e-9 per
    axis for ``bound=6`` and ``N(0, I)``; a learned prior, ``model.prior``, must also lie inside the box)
    times ``max_z p(x|z)``; the grid error shrinks as ``num_points`` grows. No
    encoder is used, so this is an independent check of the ELBO and of importance sampling. For a
    conditional model it is ``log p(x|y)``, one pass over the grid per distinct label.

    Grid resolution: for a Gaussian posterior of standard deviation ``s`` along an axis, the midpoint rule
    with spacing ``h = 2 bound / num_points`` errs by a relative ``~2 exp(-2 pi^2 s^2 / h^2)`` (``1e-3`` at
    ``s = 0.62 h``, 34% at ``s = 0.3 h``). The encoder's posterior standard deviations serve as the
    estimate of ``s`` (one encoder pass; the quadrature itself never uses the encoder): where this error
    estimate exceeds ``1e-3`` for some example, the grid is too coarse for it, and ``coarse_grid`` says what
    happens: ``"warn"`` (a ``CoarseGridWarning`` naming how many examples, the smallest ``s`` and the
    ``num_points`` that would resolve it), ``"raise"`` (a ``ValueError`` saying the same) or ``"ignore"``.
    The check trusts the encoder: a posterior much narrower than ``q(z|x)`` is not seen.

    Args:
      model: a ``VAE`` with ``latent_dim`` 1 or 2.
      x: data, shape ``(N, D)``.
      y: labels of a conditional model: integers ``(N,)`` or one-hot rows ``(N, C)``.
      num_points: grid points per latent axis.
      bound: half-width of the grid, in prior standard deviations.
      grid_chunk: grid points decoded at once (memory only).
      coarse_grid: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the grid is too coarse for
        some example's posterior (see above).

    Returns:
      ``log p(x)`` of shape ``(N,)`` in nats.
    """
    x, y = _inputs.model_data(model, x, y)
    num_points = _checks.positive_int("num_points", num_points, minimum=2)
    _checks.choice("coarse_grid", coarse_grid, ("warn", "raise", "ignore"))
    bound = _checks.real("bound", bound, minimum=0.0, strict=True)
    if model.latent_dim not in (1, 2):
        raise ValueError(
            f"quadrature needs a model with latent_dim 1 or 2, got latent_dim={model.latent_dim}"
        )
    z, log_cell = latent_grid(model.latent_dim, num_points, bound)
    if coarse_grid != "ignore":
        _check_resolution(model, x, y, num_points, bound, coarse_grid)
    g = z.shape[0]
    chunk = min(_checks.positive_int("grid_chunk", grid_chunk), g)
    while g % chunk:  # largest divisor of the grid size not above the requested chunk
        chunk -= 1
    graphdef, state = nnx.split(model)
    kw = dict(likelihood=model.likelihood, grid_chunk=chunk)
    run = lambda label: _quadrature(graphdef, state, x, label, z, log_cell, **kw)  # noqa: E731
    if y is None:
        return run(None)
    out = jnp.zeros(x.shape[0])
    for label in np.unique(np.asarray(y), axis=0):  # log p(x|y) of the examples with this label
        out = jnp.where(jnp.all(y == label[None], axis=-1), run(jnp.asarray(label)), out)
    return out
