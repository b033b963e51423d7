"""vae_lib: a small functional library for variational autoencoders in JAX, Flax NNX and Optax.

Layers, each importing only those above it in this list:

1. ``distributions``: log-densities and KL divergences (pure ``jax.numpy``); ``likelihoods``: the decoder
   likelihoods ``p(x|z)`` by name.
2. ``objectives``: ``reparameterize``, the ELBO, the importance weights and the IWAE bound; ``discrete``:
   Gumbel-softmax, straight-through and vector quantization for discrete latents.
3. ``models``: Flax NNX encoders and decoders (MLP, conditional MLP and convolutional) and ``VAE``;
   ``priors``: learned priors (mixture of Gaussians, VampPrior).
4. ``training``, ``evaluation``, ``diagnostics`` (and ``checkpoint``): Optax training, log-likelihood
   estimates, diagnostics of the latent space; ``sharding``: the device mesh for data-parallel training;
   ``sample_metrics``: a digit classifier, Fréchet distance and precision/recall in its feature space.
5. ``data`` and ``plotting``, at the edges.

Private modules: ``_checks`` (argument checks), ``_inputs`` (the check where data meets a model),
``_cpu_conv`` and ``_fast_bernoulli`` (CPU speed-ups, each behind one function with a plain fallback).
"""

from vae_lib import diagnostics, discrete, likelihoods, posteriors, priors, sample_metrics, sharding
from vae_lib.checkpoint import load_checkpoint, save_checkpoint
from vae_lib.distributions import (
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_gaussians,
    kl_standard_normal,
    standard_normal_log_prob,
)
from vae_lib.evaluation import evaluate_elbo, importance_log_likelihood, quadrature_log_likelihood
from vae_lib.likelihoods import LIKELIHOODS, Likelihood
from vae_lib.models import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, conv_vae, mlp_vae
from vae_lib.objectives import (
    ElboTerms,
    decode_samples,
    elbo,
    elbo_per_example,
    iwae_bound,
    log_importance_weights,
    log_likelihood,
    log_mean_exp,
    reparameterize,
)
from vae_lib.sharding import data_mesh
from vae_lib.training import NonFiniteLossError, TrainState, fit

__version__ = "0.1.0"

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "ElboTerms",
    "LIKELIHOODS",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "NonFiniteLossError",
    "TrainState",
    "VAE",
    "bernoulli_log_prob",
    "conv_vae",
    "data_mesh",
    "decode_samples",
    "diagnostics",
    "discrete",
    "elbo",
    "elbo_per_example",
    "evaluate_elbo",
    "fit",
    "gaussian_log_prob",
    "importance_log_likelihood",
    "iwae_bound",
    "kl_gaussians",
    "kl_standard_normal",
    "likelihoods",
    "load_checkpoint",
    "log_importance_weights",
    "log_likelihood",
    "log_mean_exp",
    "mlp_vae",
    "posteriors",
    "priors",
    "quadrature_log_likelihood",
    "reparameterize",
    "sample_metrics",
    "save_checkpoint",
    "sharding",
    "standard_normal_log_prob",
]
