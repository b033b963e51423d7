"""Learned priors ``p(z)`` (layer 3: Flax NNX), trained with the encoder and decoder by ``vae_lib.fit``.

A prior is an ``nnx.Module`` with two methods, the protocol ``vae_lib.VAE(..., prior=...)`` expects:

- ``log_prob(z)``: ``z (..., Z) -> (...)``, the log-density summed over the latent dimensions;
- ``sample(key, n)``: ``(n, Z)`` draws.

Its parameters live inside the model, so ``fit`` updates them with everything else, and the objectives use
the Monte Carlo KL ``log q(z|x) - log p(z)`` (``vae_lib.objectives``). Two priors:

- ``MixturePrior``: a mixture of ``K`` diagonal Gaussians with learned weights, means and variances.
- ``VampPrior`` (Tomczak & Welling, 2018): the mixture of the encoder's own posteriors at ``K`` learned
  pseudo-inputs, ``p(z) = (1/K) sum_k q(z | u_k)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib import _checks
from vae_lib.distributions import gaussian_log_prob

__all__ = ["MixturePrior", "VampPrior", "mixture_log_prob"]


def mixture_log_prob(z: jax.Array, log_weights: jax.Array, means: jax.Array, logvars: jax.Array) -> jax.Array:
    """Log-density of a mixture of diagonal Gaussians, ``log sum_k w_k N(z; m_k, diag(exp(v_k)))``.

    Args:
      z: values, shape ``(..., Z)``.
      log_weights: log mixture weights, shape ``(K,)`` (normalized: ``logsumexp(log_weights) = 0``).
      means, logvars: component parameters, shape ``(K, Z)`` each.

    Returns:
      Log-densities of shape ``(...)``.
    """
    z = _checks.array("z", z, min_ndim=1)
    if z.shape[-1] != means.shape[-1]:
        raise ValueError(
            f"z must have the prior's latent size {means.shape[-1]} as its last axis, got {tuple(z.shape)}"
        )
    lead = (1,) * (z.ndim - 1)  # explicit broadcasting: (K, Z) -> (1, ..., 1, K, Z)
    comps = gaussian_log_prob(
        z[..., None, :], means.reshape(*lead, *means.shape), logvars.reshape(*lead, *logvars.shape)
    )
    return jax.nn.logsumexp(comps + log_weights.reshape(*lead, -1), axis=-1)  # (..., K) -> (...)


class MixturePrior(nnx.Module):
    """``p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(logvars_k)))``, every parameter learned.

    The means start as draws from ``N(0, init_scale^2 I)``, the variances at 1 and the weights equal, so at
    initialization the prior is a slightly spread standard normal; ``num_components=1`` with
    ``init_scale=0`` is exactly ``N(0, I)`` at the start.

    Shapes: ``log_prob(z (..., Z)) -> (...)``; ``sample(key, n) -> (n, Z)``.
    """

    def __init__(self, latent_dim: int, num_components: int, *, init_scale: float = 1.0, rngs: nnx.Rngs):
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        num_components = _checks.positive_int("num_components", num_components)
        init_scale = _checks.real("init_scale", init_scale, minimum=0.0)
        self.latent_dim = latent_dim
        self.logits = nnx.Param(jnp.zeros((num_components,)))
        self.means = nnx.Param(init_scale * jax.random.normal(rngs.params(), (num_components, latent_dim)))
        self.logvars = nnx.Param(jnp.zeros((num_components, latent_dim)))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log p(z)``: ``z (..., Z) -> (...)``."""
        log_w = jax.nn.log_softmax(self.logits[...])  # (K,)
        return mixture_log_prob(z, log_w, self.means[...], self.logvars[...])

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``num_samples`` draws: ``k ~ softmax(logits)``, then ``z ~ N(means_k, diag(exp(logvars_k)))``."""
        key = _checks.key("key", key)
        num_samples = _checks.positive_int("num_samples", num_samples)
        k_comp, k_z = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.logits[...], shape=(num_samples,))  # (n,)
        eps = jax.random.normal(k_z, (num_samples, self.latent_dim))
        return self.means[...][comp] + jnp.exp(0.5 * self.logvars[...][comp]) * eps  # (n, Z)


class VampPrior(nnx.Module):
    """The VampPrior (Tomczak & Welling, 2018): ``p(z) = (1/K) sum_k q(z | u_k)`` with learned pseudo-inputs.

    ``encoder`` is the VAE's own encoder (the same module object, so the prior changes as it learns);
    ``pseudo_inputs`` ``u`` of shape ``(K, D)`` start as ``init`` (e.g. ``K`` training examples) and are
    learned with the model.

    Shapes: ``log_prob(z (..., Z)) -> (...)``; ``sample(key, n) -> (n, Z)``.
    """

    def __init__(self, encoder: nnx.Module, init: jax.Array):
        if not isinstance(encoder, nnx.Module) or not callable(encoder):
            raise TypeError(
                f"encoder must be the VAE's encoder (an nnx.Module), got {type(encoder).__name__}"
            )
        init = _checks.array("init", init, ndim=2, finite=True)
        self.encoder = encoder
        self.pseudo_inputs = nnx.Param(jnp.asarray(init, jnp.float32))  # (K, D)

    def components(self) -> tuple[jax.Array, jax.Array]:
        """``(mean, logvar)`` of the ``K`` components, shape ``(K, Z)`` each."""
        return self.encoder(self.pseudo_inputs[...])

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log p(z)``: ``z (..., Z) -> (...)``."""
        mean, logvar = self.components()
        k = mean.shape[0]
        return mixture_log_prob(z, jnp.full((k,), -math.log(k)), mean, logvar)

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``num_samples`` draws: a pseudo-input ``k`` uniformly, then ``z ~ q(z | u_k)``."""
        key = _checks.key("key", key)
        num_samples = _checks.positive_int("num_samples", num_samples)
        mean, logvar = self.components()
        k_comp, k_z = jax.random.split(key)
        comp = jax.random.randint(k_comp, (num_samples,), 0, mean.shape[0])
        eps = jax.random.normal(k_z, (num_samples, mean.shape[1]))
        return mean[comp] + jnp.exp(0.5 * logvar[comp]) * eps
