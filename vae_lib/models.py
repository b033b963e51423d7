"""Encoders and decoders (layer 3: Flax NNX).

Every model works on flat vectors: an encoder maps ``(N, D)`` data to ``(mean, logvar)`` of shape
``(N, Z)``, a decoder maps ``(N, Z)`` latents to its likelihood's parameters for ``(N, D)`` data (logits
for ``"bernoulli"``, ``(mean, logvar)`` for ``"gaussian"``; see ``vae_lib.likelihoods``). The convolutional
models reshape 784-pixel vectors to 28x28 images inside, so the objectives and training loop are the same
for every model.

``VAE`` pairs an encoder with a decoder and exposes ``encode``/``decode`` for ``vae_lib.objectives``. A
conditional VAE (``mlp_vae(..., num_classes=C)``) feeds one-hot labels ``y`` of shape ``(N, C)`` to both:
``encode(x, y)`` models ``q(z|x, y)`` and ``decode(z, y)`` models ``p(x|z, y)`` (Sohn et al., 2015).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib import _checks, _cpu_conv
from vae_lib._cpu_conv import depth_to_space  # sub-pixel upsampling, used by ConvDecoder
from vae_lib.likelihoods import LIKELIHOODS
from vae_lib.objectives import _is_posterior

__all__ = [
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
    "conv_vae",
    "depth_to_space",
    "mlp_vae",
]

Activation = Callable[[jax.Array], jax.Array]


def _check_rngs(rngs) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")


def _with_labels(h: jax.Array, y: jax.Array | None) -> jax.Array:
    """Append the conditioning to the features: ``(N, F), (N, C) -> (N, F + C)``."""
    return h if y is None else jnp.concatenate([h, y.astype(h.dtype)], axis=-1)


class _MLP(nnx.Module):
    """Dense layers with an activation after each: ``(N, in) -> (N, sizes[-1])``."""

    def __init__(self, in_features: int, sizes: Sequence[int], activation: Activation, rngs: nnx.Rngs):
        dims = (in_features, *sizes)
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.activation = activation

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.layers:
            h = self.activation(layer(h))
        return h


class MLPEncoder(nnx.Module):
    """Gaussian encoder ``q(z|x) = N(mean(x), diag(exp(logvar(x))))`` with an MLP body.

    ``hidden=()`` gives an affine encoder. With ``num_classes = C > 0`` it is ``q(z|x, y)``: the one-hot
    labels are appended to ``x``.

    Shapes: ``x (N, in_features)`` (and ``y (N, C)``) ``-> mean, logvar (N, latent_dim)``.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (500,),
        activation: Activation = jax.nn.relu,
        num_classes: int = 0,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.positive_int("in_features", in_features)
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        hidden = _checks.int_sequence("hidden", hidden)
        _checks.function("activation", activation)
        num_classes = _checks.positive_int("num_classes", num_classes, minimum=0)
        _check_rngs(rngs)
        self.in_features = in_features
        self.num_classes = num_classes
        self.body = _MLP(in_features + num_classes, hidden, activation, rngs)
        width = hidden[-1] if hidden else in_features + num_classes
        self.mean = nnx.Linear(width, latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(width, latent_dim, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        h = self.body(_with_labels(x, y))  # (N, D [+ C]) -> (N, H)
        return self.mean(h), self.logvar(h)  # (N, Z) each


OBS_LOGVAR = ("per_pixel", "shared")


class MLPDecoder(nnx.Module):
    """Decoder ``p(x|z)`` with an MLP body: Bernoulli (logits) or Gaussian (mean, logvar).

    For a likelihood with a scale (``"gaussian"``), ``obs_logvar`` chooses the log-variance: ``None`` or
    ``"per_pixel"`` learns one per data dimension; ``"shared"`` learns one for all dimensions (the
    isotropic ``sigma^2 I`` of probabilistic PCA); a float fixes it (``0.0`` is unit variance, the squared
    error up to constants). ``hidden=()`` gives an affine decoder. With ``num_classes = C > 0`` it is
    ``p(x|z, y)``: the one-hot labels are appended to ``z``.

    Shapes: ``z (N, latent_dim)`` (and ``y (N, C)``) ``-> logits (N, out_features)``, or ``(mean, logvar)``,
    each ``(N, out_features)``.
    """

    def __init__(
        self,
        latent_dim: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
        obs_logvar: float | str | None = None,
        activation: Activation = jax.nn.relu,
        num_classes: int = 0,
        rngs: nnx.Rngs,
    ):
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        out_features = _checks.positive_int("out_features", out_features)
        hidden = _checks.int_sequence("hidden", hidden)
        _checks.choice("likelihood", likelihood, tuple(LIKELIHOODS))
        obs_logvar = _check_obs_logvar(obs_logvar)
        _checks.function("activation", activation)
        num_classes = _checks.positive_int("num_classes", num_classes, minimum=0)
        _check_rngs(rngs)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.num_classes = num_classes
        self.body = _MLP(latent_dim + num_classes, hidden, activation, rngs)
        width = hidden[-1] if hidden else latent_dim + num_classes
        self.out = nnx.Linear(width, out_features, rngs=rngs)
        pair = LIKELIHOODS[likelihood].pair
        shape = {"per_pixel": (out_features,), "shared": ()}.get(obs_logvar) if pair else None
        self.obs_logvar = nnx.data(None if shape is None else nnx.Param(jnp.zeros(shape)))  # learned
        self.fixed_logvar = obs_logvar if pair and shape is None else None  # a float, or None

    def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
        out = self.out(self.body(_with_labels(z, y)))  # (N, Z [+ C]) -> (N, D)
        if not LIKELIHOODS[self.likelihood].pair:
            return out
        if self.fixed_logvar is not None:
            logvar = jnp.full_like(out, self.fixed_logvar)
        else:
            logvar = jnp.broadcast_to(self.obs_logvar[...], out.shape)  # (D,) or () -> (N, D)
        return out, logvar


def _check_obs_logvar(obs_logvar):
    if obs_logvar is None:
        return "per_pixel"
    if isinstance(obs_logvar, str):
        _checks.choice("obs_logvar", obs_logvar, OBS_LOGVAR)
        return obs_logvar
    return _checks.real("obs_logvar", obs_logvar)


class ConvEncoder(nnx.Module):
    """Convolutional Gaussian encoder for 28x28 images given as 784-vectors.

    Stride-2 3x3 ``"SAME"`` convolutions (28 -> 14 -> 7 with the default two) with ReLU, a dense layer with
    ReLU, then mean and logvar. The defaults are the keras-io VAE's architecture (channels 32 and 64,
    dense 16).

    Shapes: ``x (N, 784) -> mean, logvar (N, latent_dim)``.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 16,
        image_shape: tuple[int, int, int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ):
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        channels = _checks.int_sequence("channels", channels, allow_empty=False)
        hidden = _checks.positive_int("hidden", hidden)
        image_shape = _checks.image_shape("image_shape", image_shape)
        _check_rngs(rngs)
        self.image_shape = tuple(image_shape)
        h, w, c = self.image_shape
        dims = (c, *channels)
        self.convs = nnx.List(
            [
                nnx.Conv(a, b, (3, 3), strides=2, padding="SAME", rngs=rngs)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )
        for _ in channels:
            h, w = -(-h // 2), -(-w // 2)
        self.dense = nnx.Linear(h * w * channels[-1], hidden, rngs=rngs)
        self.mean = nnx.Linear(hidden, latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(hidden, latent_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape(x.shape[0], *self.image_shape)  # (N, 784) -> (N, 28, 28, 1)
        for conv in self.convs:
            h = jax.nn.relu(_cpu_conv.apply(conv, h))  # conv(h), as matrix products on the CPU: H/2, W/2
        h = jax.nn.relu(self.dense(h.reshape(h.shape[0], -1)))  # (N, 7 * 7 * C) -> (N, hidden)
        return self.mean(h), self.logvar(h)


class ConvDecoder(nnx.Module):
    """Convolutional Bernoulli decoder: latents to 784 logits of a 28x28 image.

    A dense layer with ReLU to a 7x7 map of ``channels[0]`` channels, then one 2x upsampling with ReLU per
    entry ``c`` of ``channels``, to ``c`` channels (7 -> 14 -> 28), then a 3x3 convolution to one channel of
    logits. With the defaults, ``(64, 32)``, this is the keras-io VAE's decoder: dense 7x7x64, transposed
    convolutions to 64 and 32 channels, a 3x3 (transposed) convolution to 1. ``upsample`` chooses how each
    2x step is done:

    - ``"depth_to_space"`` (default): a 2x2 convolution over input rows ``{h - 1, h}`` and columns
      ``{w - 1, w}`` to ``4 * c`` channels, then depth-to-space (sub-pixel convolution). It contains every
      3x3 stride-2 transposed convolution as a special case (7 of the 16 weights per channel pair fixed
      at zero), has 16/9 of its parameters, and costs the same to run.
    - ``"transpose"``: ``nnx.ConvTranspose`` with a 3x3 kernel and stride 2, as in the keras-io example.

    Shapes: ``z (N, latent_dim) -> logits (N, 784)``.
    """

    likelihood = "bernoulli"

    def __init__(
        self,
        latent_dim: int,
        *,
        channels: Sequence[int] = (64, 32),
        upsample: str = "depth_to_space",
        image_shape: tuple[int, int, int] = (28, 28, 1),
        rngs: nnx.Rngs,
    ):
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        channels = _checks.int_sequence("channels", channels, allow_empty=False)
        _checks.choice("upsample", upsample, ("depth_to_space", "transpose"))
        image_shape = _checks.image_shape("image_shape", image_shape)
        _check_rngs(rngs)
        self.latent_dim = latent_dim
        self.upsample = upsample
        self.image_shape = tuple(image_shape)
        h, w, c = self.image_shape
        scale = 2 ** len(channels)
        if h % scale or w % scale:
            raise ValueError(f"image_shape {image_shape} must be divisible by 2**len(channels) = {scale}")
        self.start = (h // scale, w // scale, channels[0])
        self.dense = nnx.Linear(latent_dim, h // scale * (w // scale) * channels[0], rngs=rngs)
        ups = []
        for a, b in zip((channels[0], *channels[:-1]), channels, strict=True):  # c_in -> c for each entry c
            if upsample == "transpose":
                ups.append(nnx.ConvTranspose(a, b, (3, 3), strides=2, padding="SAME", rngs=rngs))
            else:
                ups.append(nnx.Conv(a, 4 * b, (2, 2), padding=((1, 0), (1, 0)), rngs=rngs))  # rows h-1, h
        self.ups = nnx.List(ups)
        self.out = nnx.Conv(channels[-1], c, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.dense(z)).reshape(z.shape[0], *self.start)  # (N, Z) -> (N, 7, 7, C0)
        for up in self.ups:  # up(h), as matrix products on the CPU
            h = _cpu_conv.apply(up, h)  # (N, H, W, C) -> (N, 2H, 2W, C'), or (N, H, W, 4C') to rearrange
            if self.upsample == "depth_to_space":
                h = depth_to_space(h)  # (N, H, W, 4C') -> (N, 2H, 2W, C')
            h = jax.nn.relu(h)
        logits = _cpu_conv.apply(self.out, h)  # (N, 28, 28, C') -> (N, 28, 28, 1)
        return logits.reshape(z.shape[0], -1)  # (N, 784)


class VAE(nnx.Module):
    """An encoder, a decoder and a prior ``p(z)``: the standard normal ``N(0, I)`` unless ``prior`` is given.

    ``encode(x) -> (mean, logvar)``, ``decode(z) -> likelihood parameters``; ``likelihood`` names the
    decoder's likelihood (``vae_lib.likelihoods``) and ``mean_of(output)`` turns decoder output into
    ``E[x|z]``. A conditional model (``num_classes > 0``) takes one-hot labels ``y (N, C)`` in every method.

    The encoder may instead return a *posterior object* (``vae_lib.posteriors``: anything with
    ``sample(key, k)`` and ``log_prob(z)``, e.g. an ``IAFPosterior``); ``encode`` then returns it as it is,
    and the objectives, ``fit`` and the evaluation functions use the Monte Carlo KL. Tools that need the pair
    (``reconstruct``, ``diagnostics.encode_dataset``) refuse such a model; ``diagnostics.posterior_mean``
    (hence active units) takes both.

    ``prior``: ``None`` for ``N(0, I)``, or an ``nnx.Module`` with ``log_prob(z (..., Z)) -> (...)`` and
    ``sample(key, n) -> (n, Z)`` (e.g. ``vae_lib.priors.MixturePrior``). Its parameters are part of the
    model, so ``fit`` learns them with the encoder and decoder; the objectives then use the Monte Carlo KL
    ``log q(z|x) - log p(z)`` (``log_prior``), since the closed form exists only for ``N(0, I)``.
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, prior: nnx.Module | None = None):
        if not isinstance(encoder, nnx.Module) or not callable(encoder):
            raise TypeError(
                f"encoder must be an nnx.Module mapping x to (mean, logvar), got {type(encoder).__name__}"
            )
        needs = ("likelihood", "latent_dim")
        if not isinstance(decoder, nnx.Module) or not all(hasattr(decoder, a) for a in needs):
            raise TypeError(
                "decoder must be an nnx.Module with attributes likelihood and latent_dim (e.g. MLPDecoder), "
                f"got {type(decoder).__name__}"
            )
        classes = getattr(encoder, "num_classes", 0), getattr(decoder, "num_classes", 0)
        if classes[0] != classes[1]:
            raise ValueError(f"encoder and decoder must take the same num_classes, got {classes}")
        encoder_z = getattr(getattr(encoder, "mean", None), "out_features", None)  # the models of this module
        if encoder_z is not None and encoder_z != decoder.latent_dim:
            raise ValueError(
                f"encoder and decoder must have the same latent size: the encoder's mean has {encoder_z} "
                f"outputs, the decoder takes latent_dim={decoder.latent_dim}"
            )
        methods = ("log_prob", "sample")
        if prior is not None and not (
            isinstance(prior, nnx.Module) and all(callable(getattr(prior, a, None)) for a in methods)
        ):
            raise TypeError(
                "prior must be None (the standard normal) or an nnx.Module with methods log_prob(z) and "
                f"sample(key, n) (e.g. vae_lib.priors.MixturePrior), got {type(prior).__name__}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.prior = nnx.data(prior)

    @property
    def likelihood(self) -> str:
        return self.decoder.likelihood

    @property
    def log_prior(self) -> Callable[[jax.Array], jax.Array] | None:
        """The prior's ``log p(z)``, ``z (..., Z) -> (...)``, for the objectives' ``log_prior=``.

        ``None`` for the standard normal ``N(0, I)``, whose KL the objectives take in closed form.
        """
        return None if self.prior is None else self.prior.log_prob

    @property
    def latent_dim(self) -> int:
        return self.decoder.latent_dim

    @property
    def num_classes(self) -> int:
        """``C``, the length of the one-hot conditioning ``y`` (0: not a conditional model)."""
        return int(getattr(self.decoder, "num_classes", 0))

    @property
    def data_dim(self) -> int | None:
        """``D``, the length of a data vector the encoder takes (``None`` if the encoder does not say)."""
        if hasattr(self.encoder, "in_features"):
            return int(self.encoder.in_features)
        if hasattr(self.encoder, "image_shape"):
            h, w, c = self.encoder.image_shape
            return h * w * c
        return None

    def _labels(self, y: jax.Array | None, rows: jax.Array) -> tuple[jax.Array, ...]:
        """``()`` for an unconditional model, ``(y,)`` for a conditional one (static checks only)."""
        if self.num_classes == 0:
            if y is not None:
                raise ValueError("y was given but this model is not conditional (num_classes=0)")
            return ()
        if y is None:
            raise ValueError(
                f"this model is conditional: pass y, one-hot labels of shape (N, {self.num_classes})"
            )
        y = _checks.array("y", y, min_ndim=1)
        if y.shape != (*rows.shape[:-1], self.num_classes):
            raise ValueError(
                f"y must have shape {(*rows.shape[:-1], self.num_classes)}, got {tuple(y.shape)}"
            )
        return (y,)

    def encode(self, x: jax.Array, y: jax.Array | None = None) -> Any:
        """``x (..., D)`` (and ``y (..., C)``) ``-> mean, logvar (..., Z)``: usually ``(N, D) -> (N, Z)``.

        An encoder that returns a posterior object (``vae_lib.posteriors``) has it returned as it is.
        """
        # only the last axis is checked: the models also take (D,) or (K, N, D), e.g. under jax.vmap
        x = _checks.array("x", x, min_ndim=1)
        d = self.data_dim
        if d is not None and x.shape[-1] != d:
            raise ValueError(f"x must have shape (N, {d}) for this model, got {tuple(x.shape)}")
        if x.ndim != 2 and hasattr(self.encoder, "image_shape"):  # an image encoder takes (N, D) rows
            mean, logvar = self.encode(x.reshape(-1, d), y)  # (..., D) -> (M, D) -> (M, Z)
            return mean.reshape(*x.shape[:-1], -1), logvar.reshape(*x.shape[:-1], -1)
        out = self.encoder(x, *self._labels(y, x))
        if _is_posterior(out):  # a flow, say: sample(key, k) and log_prob(z)
            return out
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(hasattr(a, "shape") for a in out)):
            got = f"an array of shape {tuple(out.shape)}" if hasattr(out, "shape") else type(out).__name__
            raise TypeError(
                f"the encoder must return a pair (mean, logvar), got {got} (or a posterior object with "
                "methods sample(key, num_samples) and log_prob(z), vae_lib.posteriors)"
            )
        if tuple(out[0].shape) != tuple(out[1].shape):
            raise ValueError(
                f"the encoder's mean and logvar must have the same shape, got {tuple(out[0].shape)} and "
                f"{tuple(out[1].shape)}"
            )
        return tuple(out)

    def decode(self, z: jax.Array, y: jax.Array | None = None) -> Any:
        """``z (N, Z)`` (and ``y (N, C)``) ``->`` logits ``(N, D)`` or ``(mean, logvar)``."""
        z = _checks.array("z", z, min_ndim=1)
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}) for this model, got {tuple(z.shape)}")
        return self.decoder(z, *self._labels(y, z))

    def mean_of(self, output: Any) -> jax.Array:
        """``E[x|z]`` from decoder output: ``sigmoid(logits)`` or the Gaussian mean."""
        return LIKELIHOODS[self.likelihood].mean(output)

    def reconstruct(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        """Decoder mean at the posterior mean: ``E[x | z = mean(x)]``, shape ``(N, D)``.

        A ``(mean, logvar)`` encoder only: a posterior object (a flow) has no closed-form mean
        (``diagnostics.posterior_mean`` estimates it)."""
        q = self.encode(x, y)
        if _is_posterior(q):
            raise TypeError(
                "reconstruct needs an encoder that returns (mean, logvar); this one returns a posterior "
                f"object ({type(q).__name__}): decode vae_lib.diagnostics.posterior_mean(model, x, key=...) "
                "instead"
            )
        return self.mean_of(self.decode(q[0], y))

    def sample(self, key: jax.Array, num_samples: int, y: jax.Array | None = None) -> jax.Array:
        """``E[x|z]`` for ``z ~ p(z)``, the model's prior: shape ``(num_samples, D)`` (means, not draws).

        For a conditional model, ``y`` gives each sample's class: integer labels ``(num_samples,)`` or
        one-hot rows ``(num_samples, C)``; e.g. ``model.sample(key, 10, y=jnp.arange(10))``.
        """
        key = _checks.key("key", key)
        num_samples = _checks.positive_int("num_samples", num_samples)
        if y is not None and self.num_classes:
            y = _checks.labels("y", y, num_classes=self.num_classes, num_rows=num_samples)
        if self.prior is None:
            z = jax.random.normal(key, (num_samples, self.latent_dim))
        else:
            z = self.prior.sample(key, num_samples)  # (num_samples, Z)
        return self.mean_of(self.decode(z, y))


def mlp_vae(
    data_dim: int,
    latent_dim: int,
    *,
    hidden: Sequence[int] = (500,),
    likelihood: str = "bernoulli",
    obs_logvar: float | str | None = None,
    activation: Activation = jax.nn.relu,
    num_classes: int = 0,
    prior: nnx.Module | None = None,
    rngs: nnx.Rngs,
) -> VAE:
    """An MLP VAE ``data_dim - hidden - latent_dim`` with a mirrored decoder.

    ``hidden=()`` gives the linear VAE (affine encoder and decoder); with ``likelihood="gaussian"`` and
    ``obs_logvar="shared"`` its maximum-likelihood solution is probabilistic PCA. ``num_classes = C > 0``
    gives a conditional VAE whose encoder and decoder both take one-hot labels ``y (N, C)``. ``prior``: see
    ``VAE`` (default ``N(0, I)``). See ``MLPEncoder`` and ``MLPDecoder`` for the other arguments.
    """
    # everything is checked before any layer is built (MLPEncoder and MLPDecoder check again)
    data_dim = _checks.positive_int("data_dim", data_dim)
    _checks.positive_int("latent_dim", latent_dim)
    hidden = _checks.int_sequence("hidden", hidden)
    _checks.choice("likelihood", likelihood, tuple(LIKELIHOODS))
    _check_obs_logvar(obs_logvar)
    num_classes = _checks.positive_int("num_classes", num_classes, minimum=0)
    kw = dict(activation=activation, num_classes=num_classes, rngs=rngs)
    enc = MLPEncoder(data_dim, latent_dim, hidden=hidden, **kw)
    dec = MLPDecoder(
        latent_dim, data_dim, hidden=hidden[::-1], likelihood=likelihood, obs_logvar=obs_logvar, **kw
    )
    return VAE(enc, dec, prior)


def conv_vae(
    latent_dim: int,
    *,
    channels: Sequence[int] = (32, 64),
    hidden: int = 16,
    upsample: str = "depth_to_space",
    rngs: nnx.Rngs,
) -> VAE:
    """A convolutional VAE for 28x28 images (784-vectors) with a Bernoulli decoder.

    The defaults are the keras-io architecture, except that the default ``upsample="depth_to_space"``
    replaces its transposed convolutions by sub-pixel convolutions that contain them (``ConvDecoder``);
    ``upsample="transpose"`` is the keras-io model itself.
    """
    channels = _checks.int_sequence("channels", channels)
    _checks.choice("upsample", upsample, ("depth_to_space", "transpose"))
    enc = ConvEncoder(latent_dim, channels=channels, hidden=hidden, rngs=rngs)
    dec = ConvDecoder(latent_dim, channels=channels[::-1], upsample=upsample, rngs=rngs)
    return VAE(enc, dec)
