"""Bernoulli draws for dynamic binarization, fast on the CPU (private): a speed-up behind one function.

``bernoulli(key, p)`` returns exactly ``jax.random.bernoulli(key, p)``, bit for bit. Off the CPU, or for
any key implementation, configuration or dtype other than JAX's defaults, it calls that function. On the
CPU with the defaults it computes the same bits with the Threefry-2x32 rounds written out as plain integer
operations: XLA:CPU runs JAX's own Threefry as a rolled loop that writes its intermediate arrays to memory,
while these operations fuse into one vectorized loop (benchmarks/README.md has the measurements).
tests/test_training.py checks the bits against ``jax.random.bernoulli``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bernoulli(key: jax.Array, p: jax.Array) -> jax.Array:
    """``jax.random.bernoulli(key, p)``: booleans of ``p``'s shape, ``True`` with probability ``p``."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl, data = str(jax.random.key_impl(key)), jax.random.key_data(key)
    else:
        impl, data = str(jax.config.jax_default_prng_impl), key
    default_bits = impl == "threefry2x32" and jax.config.jax_threefry_partitionable
    if jax.default_backend() != "cpu" or not default_bits or p.dtype != jnp.float32 or p.size >= 2**32:
        return jax.random.bernoulli(key, p)
    # JAX's bits for element n of the flattened array are a ^ b of threefry(key, (0, n)); the uniform
    # u in [1, 2) takes 23 of them as its mantissa, and the draw is u - 1 < p.
    counts = jax.lax.iota(jnp.uint32, p.size).reshape(p.shape)
    a, b = _threefry2x32(data[0], data[1], jnp.zeros_like(counts), counts)
    mantissa = ((a ^ b) >> jnp.uint32(9)) | jnp.uint32(0x3F800000)
    return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0 < p


def _threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al., 2011), written out round by round."""
    ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ ((x2 << jnp.uint32(r)) | (x2 >> jnp.uint32(32 - r)))
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x1, x2
