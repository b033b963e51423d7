"""Training throughput of the convolutional VAE (keras-io architecture), and the test ELBO of its variants.

Usage: python benchmarks/conv_throughput.py [--rounds 5] [--epochs 5]

The keras-io VAE: encoder conv 3x3/2 to 32 and to 64 channels, dense 16, latent 2; decoder dense 7x7x64,
3x3 stride-2 transposed convolutions to 64 and 32 channels, a 3x3 convolution to 1 channel of logits
(keras-io ends with a 1-channel ``Conv2DTranspose`` of stride 1, which is the same layer). Batch 128,
MNIST-5k (31 batches of the 4,000 training digits), dynamic binarization, Adam 1e-3. Rows:

- vae_lib ``conv_vae(2)``: the library's default, sub-pixel (2x2 convolution + depth-to-space)
  upsampling; trained by ``fit``'s compiled epoch.
- vae_lib ``conv_vae(2, upsample="transpose")``: the keras-io model itself (``nnx.ConvTranspose``
  parameters), its convolutions computed as matrix products; ``fit``'s compiled epoch.
- Flax NNX as usually written: the same keras-io model with ``nnx.Conv``/``nnx.ConvTranspose`` called
  directly, trained by a per-batch ``nnx.jit`` step and ``nnx.Optimizer``. XLA:CPU differentiates the
  stride-2 transposed convolution very slowly, so only a few batches are timed.

Then both vae_lib models are trained for the same few epochs from the same key and their test ELBOs are
compared (the default should be no worse). Goals: >= 2,000 samples/s for the keras-io architecture on a
quiet 2-core machine, and the library's default at least as fast (issue 4); no slower after the
convolution kernels moved to ``vae_lib._cpu_conv`` (issue 17).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib.data import binarize, load_mnist5k  # noqa: E402

B, LR = 128, 1e-3


class KerasIOEncoder(nnx.Module):
    """keras-io's encoder written the usual NNX way (layers called directly)."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, 32, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.c2 = nnx.Conv(32, 64, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(7 * 7 * 64, 16, rngs=rngs)
        self.mean = nnx.Linear(16, 2, rngs=rngs)
        self.logvar = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(-1, 28, 28, 1)
        h = jax.nn.relu(self.c2(jax.nn.relu(self.c1(h))))
        h = jax.nn.relu(self.dense(h.reshape(h.shape[0], -1)))
        return self.mean(h), self.logvar(h)


class KerasIODecoder(nnx.Module):
    """keras-io's decoder written the usual NNX way, with ``nnx.ConvTranspose``."""

    likelihood, latent_dim = "bernoulli", 2

    def __init__(self, rngs):
        self.dense = nnx.Linear(2, 7 * 7 * 64, rngs=rngs)
        self.t1 = nnx.ConvTranspose(64, 64, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.t2 = nnx.ConvTranspose(64, 32, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.out = nnx.Conv(32, 1, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, z):
        h = jax.nn.relu(self.dense(z)).reshape(-1, 7, 7, 64)
        h = jax.nn.relu(self.t2(jax.nn.relu(self.t1(h))))
        return self.out(h).reshape(z.shape[0], -1)


def layers_called_directly(model, z):
    """The library decoder's logits computed by calling its Flax layers (``lax`` convolutions)."""
    dec = model.decoder
    h = jax.nn.relu(dec.dense(z)).reshape(z.shape[0], *dec.start)
    for up in dec.ups:
        h = up(h)
        h = jax.nn.relu(vae_lib.models.depth_to_space(h) if dec.upsample == "depth_to_space" else h)
    return dec.out(h).reshape(z.shape[0], -1)


def nnx_loop(model, x_np, batches):
    """``batches`` steps of a per-batch ``nnx.jit`` train step with ``nnx.Optimizer``."""
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, key, xb):
        def loss_fn(model):
            kb, kz = jax.random.split(key)
            xbin = jax.random.bernoulli(kb, xb).astype(xb.dtype)
            return -vae_lib.elbo(kz, xbin, model.encode, model.decode).objective

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    state = {"e": 0}

    def go():
        key = jax.random.key(state["e"])
        for b in range(batches):
            key, sub = jax.random.split(key)
            loss = train_step(model, optimizer, sub, x_np[b * B : (b + 1) * B])
        loss.block_until_ready()
        state["e"] += 1

    return go


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per row (after compilation)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the ELBO comparison")
    parser.add_argument("--slow-batches", type=int, default=2, help="batches per timed call of the NNX loop")
    args = parser.parse_args()
    _common.header("Conv VAE (keras-io architecture) training throughput, batch 128, MNIST-5k")

    data = load_mnist5k()
    x = jnp.asarray(data.x_train)
    samples = (x.shape[0] // B) * B
    default = "vae_lib conv_vae (default: sub-pixel ups)"
    keras = "vae_lib conv_vae(upsample='transpose')"
    fns = {
        default: _common.library_epoch(
            vae_lib.conv_vae(2, rngs=nnx.Rngs(0)),
            x,
            batch_size=B,
            learning_rate=LR,
            key_of_epoch=jax.random.key,
        ),
        keras: _common.library_epoch(
            vae_lib.conv_vae(2, upsample="transpose", rngs=nnx.Rngs(0)),
            x,
            batch_size=B,
            learning_rate=LR,
            key_of_epoch=jax.random.key,
        ),
    }
    z = jax.random.normal(jax.random.key(5), (64, 2))
    for upsample in ("depth_to_space", "transpose"):  # same maths as the Flax layers, up to rounding
        m = vae_lib.conv_vae(2, upsample=upsample, rngs=nnx.Rngs(3))
        diff = float(jnp.max(jnp.abs(m.decode(z) - layers_called_directly(m, z))))
        print(f"   upsample={upsample!r}: logits vs its Flax layers called directly: max |diff| {diff:.1e}")
        assert diff < 1e-3
    times = _common.interleave(fns, rounds=args.rounds)
    for name, secs in times.items():
        _common.row(name, secs, samples, cpu=times.cpu[name])
    _common.ratio("default / transpose", times, default, keras, goal=">= 1")

    slow_name = "NNX keras-io, nnx.ConvTranspose, nnx.jit loop"
    model = vae_lib.VAE(KerasIOEncoder(nnx.Rngs(0)), KerasIODecoder(nnx.Rngs(1)))
    slow = _common.interleave({slow_name: nnx_loop(model, data.x_train, args.slow_batches)}, rounds=2)
    _common.row(slow_name, slow[slow_name], args.slow_batches * B, cpu=slow.cpu[slow_name])
    slow_rate = _common.rate(slow[slow_name], args.slow_batches * B)[0]
    fast_rate = _common.rate(times[keras], samples)[0]
    print(f"   vae_lib transpose / NNX as usually written: {fast_rate / slow_rate:.0f}x by median wall time")

    # Same short training for both vae_lib models; test ELBO on a fixed binarization of the test digits.
    x_test = binarize(jax.random.key(123), data.x_test)
    print(
        f"   test ELBO after {args.epochs} epochs (same key, evaluate_elbo with 10 samples of z per digit):"
    )
    elbos = {}
    for name, upsample in [(default, "depth_to_space"), (keras, "transpose")]:
        model = vae_lib.conv_vae(2, upsample=upsample, rngs=nnx.Rngs(0))
        vae_lib.fit(
            model, data.x_train, key=jax.random.key(7), epochs=args.epochs, binarize=True, progress=False
        )
        terms = vae_lib.evaluate_elbo(jax.random.key(8), model, x_test, num_samples=10)
        elbos[name] = float(terms.elbo)
        print(f"   {name:<46s} {elbos[name]:9.2f} nats")
    diff = elbos[default] - elbos[keras]
    print(f"   default - transpose: {diff:+.2f} nats (>= 0: the default is no worse)")
    print(f"   ({_common.load()} at end)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
