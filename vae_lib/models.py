"""Encoders and decoders (layer 3: Flax NNX).

Every model works on flat vectors: an encoder maps ``(N, D)`` data to ``(mean, logvar)`` of shape
``(N, Z)``, a decoder maps ``(N, Z)`` latents to its likelihood's parameters for ``(N, D)`` data (logits
for ``"bernoulli"``, ``(mean, logvar)`` for ``"gaussian"``). The convolutional models reshape 784-pixel
vectors to 28x28 images inside, so the objectives and training loop are the same for every model.

``VAE`` pairs an encoder with a decoder and exposes ``encode``/``decode`` for ``vae_lib.objectives``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_lib import _checks
from vae_lib.objectives import LIKELIHOODS

Activation = Callable[[jax.Array], jax.Array]


def _check_rngs(rngs) -> None:
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")


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

    Shapes: ``x (N, in_features) -> mean, logvar (N, latent_dim)``.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (500,),
        activation: Activation = jax.nn.relu,
        rngs: nnx.Rngs,
    ):
        in_features = _checks.positive_int("in_features", in_features)
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        hidden = _checks.int_sequence("hidden", hidden)
        _checks.function("activation", activation)
        _check_rngs(rngs)
        self.in_features = in_features
        self.body = _MLP(in_features, hidden, activation, rngs)
        width = hidden[-1] if hidden else in_features
        self.mean = nnx.Linear(width, latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(width, latent_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.body(x)  # (N, D) -> (N, H)
        return self.mean(h), self.logvar(h)  # (N, Z) each


class MLPDecoder(nnx.Module):
    """Decoder ``p(x|z)`` with an MLP body: Bernoulli (logits) or Gaussian (mean, logvar).

    For ``likelihood="gaussian"``, ``obs_logvar=None`` learns one log-variance per data dimension;
    a float fixes it (``0.0`` is unit variance, the squared error up to constants).

    Shapes: ``z (N, latent_dim) -> logits (N, out_features)``, or ``(mean, logvar)``, each
    ``(N, out_features)``.
    """

    def __init__(
        self,
        latent_dim: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
        obs_logvar: float | None = None,
        activation: Activation = jax.nn.relu,
        rngs: nnx.Rngs,
    ):
        latent_dim = _checks.positive_int("latent_dim", latent_dim)
        out_features = _checks.positive_int("out_features", out_features)
        hidden = _checks.int_sequence("hidden", hidden)
        _checks.choice("likelihood", likelihood, LIKELIHOODS)
        _checks.function("activation", activation)
        _check_rngs(rngs)
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.body = _MLP(latent_dim, hidden, activation, rngs)
        width = hidden[-1] if hidden else latent_dim
        self.out = nnx.Linear(width, out_features, rngs=rngs)
        learned = likelihood == "gaussian" and obs_logvar is None
        self.obs_logvar = nnx.data(nnx.Param(jnp.zeros((out_features,))) if learned else None)
        self.fixed_logvar = None
        if likelihood == "gaussian" and not learned:
            self.fixed_logvar = _checks.real("obs_logvar", obs_logvar)

    def __call__(self, z: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        out = self.out(self.body(z))  # (N, Z) -> (N, D)
        if self.likelihood == "bernoulli":
            return out
        if self.fixed_logvar is not None:
            logvar = jnp.full_like(out, self.fixed_logvar)
        else:
            logvar = jnp.broadcast_to(self.obs_logvar[...], out.shape)
        return out, logvar


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """Rearrange channels into space: ``(N, H, W, C * b * b) -> (N, H * b, W * b, C)``."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, block, block, c // (block * block))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, c // (block * block))


# The convolutional models compute their convolutions as matrix products instead of calling their Flax
# layers (which hold the parameters; a layer called directly gives the same result up to rounding).
# XLA:CPU runs matrix products fast everywhere, while the gradients of its convolutions can take a slow
# generic path inside the training loop's lax.scan (a conv VAE step measured 40x slower than outside
# it), and a transposed convolution's gradient is slow everywhere (the keras-io VAE trains 14x slower
# with nnx.ConvTranspose called directly). See benchmarks/README.md.


def _same_padding(size: int, k: int, stride: int) -> tuple[tuple[int, int], int]:
    """XLA's ``"SAME"`` padding ``(before, after)`` of an axis, and the output size ``ceil(size/stride)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return (total // 2, total - total // 2), out


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, stride: int = 1, padding="SAME") -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (stride, stride), padding) + bias`` (NHWC, HWIO) as one product.

    The input windows are gathered into a ``(N * Ho * Wo, kh * kw * Cin + 1)`` matrix, the last column
    ones, and multiplied by the kernel reshaped to ``(kh * kw * Cin, Cout)`` with the bias as a last row.
    (Added after the product, the bias's gradient would be a sum over ``N * Ho * Wo`` rows, which XLA:CPU
    can take longer to compute than the product that now gives it.) ``padding`` is ``"SAME"`` or
    ``((top, bottom), (left, right))``.

    Shapes: ``x (N, H, W, Cin)``, ``kernel (kh, kw, Cin, Cout)``, ``bias (Cout,) -> (N, Ho, Wo, Cout)``.
    """
    n, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    if padding == "SAME":
        (ph, ho), (pw, wo) = _same_padding(h, kh, stride), _same_padding(w, kw, stride)
    else:
        ph, pw = padding
        ho, wo = (h + sum(ph) - kh) // stride + 1, (w + sum(pw) - kw) // stride + 1
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    windows = [
        xp[:, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
        for dy in range(kh)
        for dx in range(kw)
    ]
    ones = jnp.ones((n, ho, wo, 1), x.dtype)
    cols = jnp.concatenate([*windows, ones], axis=-1).reshape(n * ho * wo, kh * kw * cin + 1)
    weights = jnp.concatenate([kernel.reshape(kh * kw * cin, cout), bias[None]])
    return (cols @ weights).reshape(n, ho, wo, cout)


def _conv_few_outputs(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A ``"SAME"`` stride-1 convolution to few channels: one product for all taps, then shifted sums.

    ``y[h, w] = sum_{dy, dx} x[h + dy - top, w + dx - left] @ kernel[dy, dx]``: the products
    ``x @ kernel[dy, dx]`` of all taps come from one ``(N * H * W, Cin) @ (Cin, kh * kw * Cout)`` product,
    which moves much less memory than ``_conv``'s windows when ``Cout`` is small (the 1-channel output).
    """
    n, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    (ph, _), (pw, _) = _same_padding(h, kh, 1), _same_padding(w, kw, 1)
    taps = x.reshape(n * h * w, cin) @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)
    taps = jnp.pad(taps.reshape(n, h, w, kh * kw, cout), ((0, 0), ph, pw, (0, 0), (0, 0)))
    return sum(taps[:, dy : dy + h, dx : dx + w, dy * kw + dx] for dy in range(kh) for dx in range(kw))


# nnx.ConvTranspose(kernel 3, stride 2, "SAME") in sub-pixel form. Along each axis, output row 2h + i reads
# input rows h - 1 (window offset 0) and h (offset 1) through kernel taps _TAPS[i][offset]; -1 is no tap.
_TAPS = np.array([[0, 2], [-1, 1]])


def _transposed_as_subpixel(kernel: jax.Array) -> jax.Array:
    """A stride-2 ``"SAME"`` 3x3 transposed convolution's kernel as the equivalent 2x2 convolution's kernel.

    ``conv_transpose(x, kernel) == depth_to_space(_conv(x, k2, padding=((1, 0), (1, 0))))``: the 2x2
    convolution over rows ``{h - 1, h}`` and columns ``{w - 1, w}`` gives all four output phases ``(i, j)``
    as ``4 * Cout`` channels ordered ``(i, j, c)``; per input-output channel pair, 7 of its 16 weights
    (window offset, phase) are zero, the 9 others are the 3x3 kernel's.

    Shapes: ``(3, 3, Cin, Cout) -> (2, 2, Cin, 4 * Cout)``.
    """
    cin, cout = kernel.shape[2:]
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap -1 reads the added zero row/column
    k = padded[_TAPS.T[:, None, :, None], _TAPS.T[None, :, None, :]]  # (offset_y, offset_x, i, j, Cin, Cout)
    return k.transpose(0, 1, 4, 2, 3, 5).reshape(2, 2, cin, 4 * cout)


_UP_WINDOW = ((1, 0), (1, 0))  # the 2x2 window {h - 1, h} x {w - 1, w} of an upsampling step


class ConvEncoder(nnx.Module):
    """Convolutional Gaussian encoder for 28x28 images given as 784-vectors.

    Stride-2 3x3 ``"SAME"`` convolutions (28 -> 14 -> 7 with the default two) with ReLU, a dense layer with
    ReLU, then mean and logvar. The defaults are the keras-io VAE's architecture (channels 32 and 64,
    dense 16). Each convolution is ``self.convs[i]``'s, computed as a matrix product (see ``_conv``).

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
            h = jax.nn.relu(_conv(h, conv.kernel[...], conv.bias[...], stride=2))  # relu(conv(h)): H/2, W/2
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
      3x3 stride-2 transposed convolution as a special case (``_transposed_as_subpixel``: 7 of the 16
      weights per channel pair fixed at zero), has 16/9 of its parameters, and costs the same to run.
    - ``"transpose"``: ``nnx.ConvTranspose`` with a 3x3 kernel and stride 2, as in the keras-io example;
      computed in the sub-pixel form above (same function, same parameters), which XLA:CPU
      differentiates tens of times faster than the transposed convolution itself.

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
                ups.append(nnx.Conv(a, 4 * b, (2, 2), padding=_UP_WINDOW, rngs=rngs))
        self.ups = nnx.List(ups)
        self.out = nnx.Conv(channels[-1], c, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.dense(z)).reshape(z.shape[0], *self.start)  # (N, Z) -> (N, 7, 7, C0)
        for up in self.ups:  # each equals up(h), then depth-to-space for "depth_to_space"
            if self.upsample == "transpose":  # the same bias for the four output phases
                kernel, bias = _transposed_as_subpixel(up.kernel[...]), jnp.tile(up.bias[...], 4)
            else:
                kernel, bias = up.kernel[...], up.bias[...]
            h = depth_to_space(_conv(h, kernel, bias, padding=_UP_WINDOW))
            h = jax.nn.relu(h)  # (N, H, W, C) -> (N, 2H, 2W, C')
        k, b = self.out.kernel[...], self.out.bias[...]
        logits = _conv_few_outputs(h, k) + b[None, None, None] if k.shape[3] < k.shape[2] else _conv(h, k, b)
        return logits.reshape(z.shape[0], -1)  # (N, 28, 28, 1) -> (N, 784)


class VAE(nnx.Module):
    """An encoder and a decoder with a standard-normal prior ``p(z) = N(0, I)``.

    ``encode(x) -> (mean, logvar)``, ``decode(z) -> likelihood parameters``, ``likelihood`` names the
    decoder's likelihood; ``mean_of(output)`` turns decoder output into ``E[x|z]``.
    """

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module):
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
        self.encoder = encoder
        self.decoder = decoder

    @property
    def likelihood(self) -> str:
        return self.decoder.likelihood

    @property
    def latent_dim(self) -> int:
        return self.decoder.latent_dim

    @property
    def data_dim(self) -> int | None:
        """``D``, the length of a data vector the encoder takes (``None`` if the encoder does not say)."""
        if hasattr(self.encoder, "in_features"):
            return int(self.encoder.in_features)
        if hasattr(self.encoder, "image_shape"):
            h, w, c = self.encoder.image_shape
            return h * w * c
        return None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x (N, D) -> mean, logvar (N, Z)``."""
        # only the last axis is checked: the MLP models also take (D,) or (K, N, D), e.g. under jax.vmap
        x = _checks.array("x", x, min_ndim=1, finite=False)
        d = self.data_dim
        if d is not None and x.shape[-1] != d:
            raise ValueError(f"x must have shape (N, {d}) for this model, got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: jax.Array) -> Any:
        """``z (N, Z) ->`` logits ``(N, D)`` or ``(mean, logvar)``."""
        z = _checks.array("z", z, min_ndim=1, finite=False)
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}) for this model, got {tuple(z.shape)}")
        return self.decoder(z)

    def mean_of(self, output: Any) -> jax.Array:
        """``E[x|z]`` from decoder output: ``sigmoid(logits)`` or the Gaussian mean."""
        return jax.nn.sigmoid(output) if self.likelihood == "bernoulli" else output[0]

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """Decoder mean at the posterior mean: ``E[x | z = mean(x)]``, shape ``(N, D)``."""
        return self.mean_of(self.decode(self.encode(x)[0]))

    def sample(self, key: jax.Array, num_samples: int) -> jax.Array:
        """``E[x|z]`` for ``z ~ p(z)``: shape ``(num_samples, D)`` (means, not noisy draws)."""
        key = _checks.key("key", key)
        num_samples = _checks.positive_int("num_samples", num_samples)
        z = jax.random.normal(key, (num_samples, self.latent_dim))
        return self.mean_of(self.decode(z))


def mlp_vae(
    data_dim: int,
    latent_dim: int,
    *,
    hidden: Sequence[int] = (500,),
    likelihood: str = "bernoulli",
    obs_logvar: float | None = None,
    activation: Activation = jax.nn.relu,
    rngs: nnx.Rngs,
) -> VAE:
    """An MLP VAE ``data_dim - hidden - latent_dim`` with a mirrored decoder."""
    # everything is checked before any layer is built (MLPEncoder and MLPDecoder check again)
    data_dim = _checks.positive_int("data_dim", data_dim)
    _checks.positive_int("latent_dim", latent_dim)
    hidden = _checks.int_sequence("hidden", hidden)
    _checks.choice("likelihood", likelihood, LIKELIHOODS)
    if obs_logvar is not None:
        _checks.real("obs_logvar", obs_logvar)
    enc = MLPEncoder(data_dim, latent_dim, hidden=hidden, activation=activation, rngs=rngs)
    dec = MLPDecoder(
        latent_dim,
        data_dim,
        hidden=hidden[::-1],
        likelihood=likelihood,
        obs_logvar=obs_logvar,
        activation=activation,
        rngs=rngs,
    )
    return VAE(enc, dec)


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
