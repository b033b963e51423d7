"""vae_lib: a small functional library for variational autoencoders in JAX, Flax NNX and Optax.

Layers, each importing only those above it in this list:

1. ``distributions``: log-densities and KL divergences (pure ``jax.numpy``).
2. ``objectives``: ``reparameterize``, the ELBO and the importance-weighted bound.
3. ``models``: Flax NNX encoders and decoders (MLP and convolutional) and ``VAE``.
4. ``training`` and ``evaluation`` (and ``checkpoint``): Optax training, log-likelihood estimates.
5. ``data`` and ``plotting``, at the edges.
"""

from vae_lib.checkpoint import load_checkpoint, save_checkpoint
from vae_lib.distributions import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_gaussians,
    kl_standard_normal,
    standard_normal_log_prob,
)
from vae_lib.evaluation import evaluate_elbo, importance_log_likelihood, quadrature_log_likelihood
from vae_lib.models import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, conv_vae, mlp_vae
from vae_lib.objectives import ElboTerms, elbo, elbo_per_example, iwae_bound, log_likelihood, reparameterize
from vae_lib.training import NonFiniteLossError, fit

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "ElboTerms",
    "MLPDecoder",
    "MLPEncoder",
    "NonFiniteLossError",
    "bernoulli_log_prob",
    "conv_vae",
    "elbo",
    "elbo_per_example",
    "evaluate_elbo",
    "fit",
    "gaussian_log_prob",
    "importance_log_likelihood",
    "iwae_bound",
    "kl_gaussians",
    "kl_standard_normal",
    "load_checkpoint",
    "log_likelihood",
    "mlp_vae",
    "quadrature_log_likelihood",
    "reparameterize",
    "save_checkpoint",
    "standard_normal_log_prob",
]
