"""Convolutions as matrix products on the CPU (private): a speed-up behind one function, ``apply``.

``apply(layer, x)`` equals ``layer(x)`` for the convolution layers of ``vae_lib.models`` (``nnx.Conv``, any
stride, ``"SAME"`` or explicit padding; ``nnx.ConvTranspose`` with a 3x3 kernel, stride 2, ``"SAME"``). Off
the CPU it is ``layer(x)``. On the CPU it gathers the input windows into a matrix ("im2col") and multiplies
by the kernel, because XLA:CPU runs matrix products fast everywhere while the gradients of its convolutions
take a slow generic path inside a ``lax.scan`` and the gradient of a strided transposed convolution is slow
everywhere (benchmarks/README.md has the measurements). tests/test_models.py checks ``apply`` against
``layer(x)`` for every layer kind the models use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """Rearrange channels into space: ``(N, H, W, C * b * b) -> (N, H * b, W * b, C)``."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, block, block, c // (block * block))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, c // (block * block))


def apply(layer: nnx.Conv | nnx.ConvTranspose, x: jax.Array) -> jax.Array:
    """``layer(x)``, computed as matrix products on the CPU. Shapes are the layer's: ``(N, H, W, C) -> ...``.

    A layer outside the cases above (another transposed convolution) is called as it is.
    """
    if jax.default_backend() != "cpu":
        return layer(x)
    kernel, bias = layer.kernel[...], layer.bias[...]
    if isinstance(layer, nnx.ConvTranspose):
        if layer.kernel_size != (3, 3) or layer.strides not in (2, (2, 2)) or layer.padding != "SAME":
            return layer(x)
        # The same function as a 2x2 convolution to the four output phases, then depth-to-space.
        kernel, bias = _transposed_as_subpixel(kernel), jnp.tile(bias, 4)
        return depth_to_space(_conv(x, kernel, bias, padding=((1, 0), (1, 0))))
    stride = layer.strides if isinstance(layer.strides, int) else layer.strides[0]
    if layer.padding == "SAME" and stride == 1 and kernel.shape[3] < kernel.shape[2]:
        return _conv_few_outputs(x, kernel) + bias[None, None, None]
    return _conv(x, kernel, bias, stride=stride, padding=layer.padding)


def _same_padding(size: int, k: int, stride: int) -> tuple[tuple[int, int], int]:
    """XLA's ``"SAME"`` padding ``(before, after)`` of an axis, and the output size ``ceil(size/stride)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return (total // 2, total - total // 2), out


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, stride: int = 1, padding="SAME") -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, (stride, stride), padding) + bias`` (NHWC, HWIO) as one product.

    The input windows are gathered into a ``(N * Ho * Wo, kh * kw * Cin + 1)`` matrix, the last column
    ones, and multiplied by the kernel reshaped to ``(kh * kw * Cin, Cout)`` with the bias as a last row
    (added after the product, the bias's gradient is a sum over ``N * Ho * Wo`` rows, which XLA:CPU can
    take longer to compute than the product). ``padding`` is ``"SAME"`` or ``((top, bottom), (left, right))``.

    Shapes: ``x (N, H, W, Cin)``, ``kernel (kh, kw, Cin, Cout)``, ``bias (Cout,) -> (N, Ho, Wo, Cout)``.
    """
    n, h, w, cin = x.shape
    kh, kw, _, cout = kernel.shape
    if padding == "SAME":
        (ph, ho), (pw, wo) = _same_padding(h, kh, stride), _same_padding(w, kw, stride)
    else:
        ph, pw = (tuple(p) for p in padding)
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
    which moves much less memory than ``_conv``'s windows when ``Cout`` is small (a 1-channel output).
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
