"""Approximate posteriors ``q(z|x)`` richer than a diagonal Gaussian (layer 3: Flax NNX).

A *posterior* is what an encoder returns for a batch ``x (B, D)``: an object with

- ``sample(key, num_samples) -> z`` of shape ``(K, B, Z)``, reparameterized (differentiable in the
  encoder's parameters);
- ``log_prob(z) -> (K, B)``, ``log q(z|x)`` summed over the latent dimensions;
- optionally ``sample_and_log_prob(key, num_samples) -> (z, log_q)``, both at once (a flow computes
  ``log q`` of its own samples far more cheaply than of an arbitrary ``z``).

The objectives (``vae_lib.objectives``) accept an encoder that returns such an object instead of a
``(mean, logvar)`` pair, and then use the Monte Carlo KL ``mean_s[log q(z_s|x) - log p(z_s)]``; so do
``fit`` and the evaluation functions, through ``model.encode`` of a ``vae_lib.VAE`` (which returns a posterior
object as it is), and ``diagnostics.posterior_mean`` (hence active units). Two posteriors:

- ``DiagonalGaussian(mean, logvar)``: the usual one. It *is* a ``(mean, logvar)`` pair (a named tuple),
  so an encoder returning it is treated exactly as one returning the pair: closed-form KL, same numbers.
- ``IAFPosterior``: a diagonal Gaussian pushed through inverse autoregressive flow steps (Kingma et al.,
  2016), built by ``IAFEncoder`` (and ``iaf_vae``). Each step is
  ``z' = sigma * z + (1 - sigma) * m`` with ``(m, s) = MADE(z, h)``, ``sigma = sigmoid(s)``, where output
  ``j`` of the autoregressive network sees only ``z_{<j}`` and the encoder's features ``h``. The Jacobian
  is triangular, so ``log |det dz'/dz| = sum_j log sigma_j``; the dimension order is reversed after each
  step, so that every dimension gets to depend on every other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_lib import _checks
from vae_lib.distributions import gaussian_log_prob
from vae_lib.models import _MLP, VAE, MLPDecoder, _check_rngs
from vae_lib.objectives import reparameterize

__all__ = [
    "DiagonalGaussian",
    "IAFEncoder",
    "IAFPosterior",
    "IAFStep",
    "PosteriorVAE",
    "iaf_vae",
    "made_masks",
]


def _lead(a: jax.Array, ndim: int) -> jax.Array:
    """``a`` with leading axes of size 1 added up to ``ndim`` axes (explicit broadcasting)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


class DiagonalGaussian(NamedTuple):
    """``q(z|x) = N(mean, diag(exp(logvar)))``, with ``mean`` and ``logvar`` of shape ``(B, Z)``.

    A named tuple, so ``mean, logvar = q`` works and the objectives treat it as the pair (analytic KL).
    """

    mean: jax.Array
    logvar: jax.Array

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``(K, B, Z)`` reparameterized draws, ``z = mean + exp(logvar / 2) * eps``."""
        return reparameterize(key, self.mean, self.logvar, num_samples)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log q(z|x)``: ``z (..., B, Z) -> (..., B)``."""
        z = _checks.array("z", z, min_ndim=self.mean.ndim)
        return gaussian_log_prob(z, _lead(self.mean, z.ndim), _lead(self.logvar, z.ndim))


def made_masks(latent_dim: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of a one-hidden-layer MADE (Germain et al., 2015) with the natural order ``1..Z``.

    Input ``i`` has degree ``i``, hidden unit ``k`` degree ``1 + k mod max(Z - 1, 1)``; a hidden unit sees
    the inputs of degree ``<=`` its own, output ``j`` the hidden units of degree ``< j``. So output ``j``
    depends on ``z_1..z_{j-1}`` only (output 1 on none).

    Returns:
      ``(mask_in (Z, H), mask_out (H, Z))``, float32 arrays of 0 and 1.
    """
    z = np.arange(1, latent_dim + 1)
    h = 1 + np.arange(hidden) % max(latent_dim - 1, 1)
    return (h[None, :] >= z[:, None]).astype(np.float32), (z[None, :] > h[:, None]).astype(np.float32)


class IAFStep(nnx.Module):
    """One inverse autoregressive flow step (Kingma et al., 2016, the numerically stable form).

    ``(m, s) = MADE(z, h)``, ``sigma = sigmoid(s)``, ``z' = reverse(sigma * z + (1 - sigma) * m)``,
    ``log |det dz'/dz| = sum_j log sigma_j``. The output layers start at zero weights and ``s`` at
    ``scale_bias``, so a new step is the contraction ``z' = sigmoid(scale_bias) * z`` (reversed).

    Shapes: ``z (..., B, Z)``, ``h (B, C) -> z' (..., B, Z), log_det (..., B)``.
    """

    def __init__(
        self, latent_dim: int, context_dim: int, hidden: int, *, scale_bias: float = 2.0, rngs: nnx.Rngs
    ):
        self.latent_dim = _checks.positive_int("latent_dim", latent_dim)
        self.hidden = _checks.positive_int("hidden", hidden)
        context_dim = _checks.positive_int("context_dim", context_dim)
        _check_rngs(rngs)
        zeros = nnx.initializers.zeros_init()
        self.inp = nnx.Linear(latent_dim, hidden, rngs=rngs)  # masked
        self.ctx = nnx.Linear(context_dim, hidden, rngs=rngs)
        self.shift = nnx.Linear(hidden, latent_dim, kernel_init=zeros, rngs=rngs)  # masked
        self.scale = nnx.Linear(
            hidden, latent_dim, kernel_init=zeros, bias_init=nnx.initializers.constant(scale_bias), rngs=rngs
        )  # masked

    def _shift_and_scale(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(m, s)`` of shape ``z.shape``; component ``j`` depends on ``z_{<j}`` and ``h`` only."""
        mask_in, mask_out = (jnp.asarray(m) for m in made_masks(self.latent_dim, self.hidden))
        a = z @ (self.inp.kernel[...] * mask_in) + _lead(
            self.inp.bias[...], z.ndim
        )  # (..., B, Z) -> (..., B, H)
        a = jax.nn.relu(a + _lead(self.ctx(h), a.ndim))
        m = a @ (self.shift.kernel[...] * mask_out) + _lead(
            self.shift.bias[...], a.ndim
        )  # (..., B, H) -> (..., B, Z)
        s = a @ (self.scale.kernel[...] * mask_out) + _lead(self.scale.bias[...], a.ndim)
        return m, s

    def __call__(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        m, s = self._shift_and_scale(z, h)
        sigma = jax.nn.sigmoid(s)
        z_new = sigma * z + (1.0 - sigma) * m
        return z_new[..., ::-1], jax.nn.log_sigmoid(s).sum(axis=-1)

    def inverse(self, z_new: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(z, log |det dz'/dz| at z)`` with ``step(z, h)[0] == z_new``: ``Z`` passes, pass ``j`` solving
        ``u_j = sigma_j z_j + (1 - sigma_j) m_j`` for dimension ``j`` (``m_j, sigma_j`` depend on ``z_{<j}``,
        already solved), so the result is exact. Dimensions not yet solved stay 0, so the network only ever
        sees finite values."""
        u = z_new[..., ::-1]
        z = jnp.zeros_like(u)
        for j in range(self.latent_dim):
            m, s = self._shift_and_scale(z, h)
            solved = (u[..., j] - m[..., j]) / jax.nn.sigmoid(s[..., j]) + m[..., j]
            z = z.at[..., j].set(solved)
        _, s = self._shift_and_scale(z, h)
        return z, jax.nn.log_sigmoid(s).sum(axis=-1)


class IAFPosterior:
    """``q(z|x)``: ``z_0 ~ N(mean, diag(exp(logvar)))`` pushed through the ``steps`` with context ``h``.

    ``log q(z_T|x) = log N(z_0; mean, exp(logvar)) - sum_t log |det dz_t/dz_{t-1}|``.

    Args:
      mean, logvar: the base Gaussian, ``(B, Z)`` each.
      context: the encoder's features ``h``, ``(B, C)``.
      steps: a sequence of ``IAFStep``.
    """

    def __init__(self, mean: jax.Array, logvar: jax.Array, context: jax.Array, steps: Sequence[IAFStep]):
        self.base = DiagonalGaussian(mean, logvar)
        self.context = context
        self.steps = tuple(steps)

    def sample_and_log_prob(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """``z (K, B, Z)`` and ``log q(z|x) (K, B)`` of the same draws."""
        z = self.base.sample(key, num_samples)  # (K, B, Z)
        log_q = self.base.log_prob(z)  # (K, B)
        for step in self.steps:
            z, log_det = step(z, self.context)
            log_q = log_q - log_det
        return z, log_q

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``(K, B, Z)`` reparameterized draws."""
        return self.sample_and_log_prob(key, num_samples)[0]

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log q(z|x)`` of any ``z (..., B, Z)``, by inverting the steps: ``(..., B)``."""
        z = _checks.array("z", z, min_ndim=2)
        total = jnp.zeros(z.shape[:-1], z.dtype)
        for step in reversed(self.steps):
            z, log_det = step.inverse(z, self.context)
            total = total + log_det
        return self.base.log_prob(z) - total


class IAFEncoder(nnx.Module):
    """An MLP encoder whose ``q(z|x)`` is an ``IAFPosterior``: a Gaussian and ``num_steps`` IAF steps.

    The MLP body gives the features ``h`` (the flow's context) and, from them, the base ``(mean, logvar)``.
    ``num_steps=0`` is the diagonal Gaussian (an ``IAFPosterior`` with no steps). Unconditional only.

    Shapes: ``x (N, in_features) -> IAFPosterior`` over ``z (K, N, latent_dim)``.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (500,),
        num_steps: int = 2,
        flow_hidden: int = 64,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.positive_int("in_features", in_features)
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        hidden = _checks.int_sequence("hidden", hidden, allow_empty=False)
        num_steps = _checks.positive_int("num_steps", num_steps, minimum=0)
        _check_rngs(rngs)
        self.in_features = in_features
        self.num_classes = 0
        self.body = _MLP(in_features, hidden, activation, rngs)
        self.mean = nnx.Linear(hidden[-1], latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(hidden[-1], latent_dim, rngs=rngs)
        self.steps = nnx.List(
            [IAFStep(latent_dim, hidden[-1], flow_hidden, rngs=rngs) for _ in range(num_steps)]
        )

    def __call__(self, x: jax.Array) -> IAFPosterior:
        h = self.body(x)  # (N, D) -> (N, H)
        return IAFPosterior(self.mean(h), self.logvar(h), h, list(self.steps))


PosteriorVAE = VAE
"""``vae_lib.VAE`` under its former name: ``VAE.encode`` now returns a posterior object as it is, so a model
whose encoder returns one needs no class of its own. Kept so that code written for it keeps working."""


def iaf_vae(
    data_dim: int,
    latent_dim: int,
    *,
    hidden: Sequence[int] = (500,),
    num_steps: int = 2,
    flow_hidden: int = 64,
    likelihood: str = "bernoulli",
    obs_logvar: float | str | None = None,
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
    rngs: nnx.Rngs,
) -> VAE:
    """A ``VAE`` with ``mlp_vae``'s decoder and an ``IAFEncoder``: a flow posterior.

    Works with ``fit(..., objective="elbo" | "iwae")``, ``evaluate_elbo`` (always the Monte Carlo KL) and
    ``importance_log_likelihood``, and ``diagnostics.posterior_mean`` (a Monte Carlo ``E_q[z|x]``, for active
    units). ``model.encode(x)`` returns an ``IAFPosterior``, not ``(mean, logvar)``, so tools that need the
    pair (``diagnostics.encode_dataset``, ``model.reconstruct``) refuse it with a ``TypeError``.
    """
    enc = IAFEncoder(
        data_dim,
        latent_dim,
        hidden=hidden,
        num_steps=num_steps,
        flow_hidden=flow_hidden,
        activation=activation,
        rngs=rngs,
    )
    dec = MLPDecoder(
        latent_dim,
        data_dim,
        hidden=tuple(hidden)[::-1],
        likelihood=likelihood,
        obs_logvar=obs_logvar,
        activation=activation,
        rngs=rngs,
    )
    return VAE(enc, dec)
