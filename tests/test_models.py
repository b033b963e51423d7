"""Shapes, dtypes, parameter counts and the layout helpers of every model in vae_lib.models."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose, assert_array_equal

import vae_lib
from vae_lib import VAE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, conv_vae, mlp_vae
from vae_lib.models import depth_to_space


def _num_params(module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _check_pair(out, n, d):
    mean, logvar = out
    assert mean.shape == logvar.shape == (n, d)
    assert mean.dtype == logvar.dtype == jnp.float32


# Layer sizes are shared across the tests (and with test_evaluation): Flax compiles its initializer once
# per weight shape, which dominates the cost of building a small model.


def test_mlp_encoder_shapes_and_parameter_count():
    enc = MLPEncoder(12, 2, hidden=(8, 8), rngs=nnx.Rngs(0))
    x = jnp.ones((4, 12))
    _check_pair(enc(x), 4, 2)
    assert _num_params(enc) == (12 * 8 + 8) + (8 * 8 + 8) + 2 * (8 * 2 + 2)
    # no hidden layer: an affine encoder
    lin = MLPEncoder(8, 2, hidden=(), rngs=nnx.Rngs(0))
    _check_pair(lin(x[:, :8]), 4, 2)
    assert _num_params(lin) == 2 * (8 * 2 + 2)


def test_mlp_decoder_bernoulli():
    dec = MLPDecoder(2, 12, hidden=(8,), rngs=nnx.Rngs(0))
    logits = dec(jnp.ones((4, 2)))
    assert not isinstance(logits, tuple)
    assert logits.shape == (4, 12) and logits.dtype == jnp.float32
    assert dec.likelihood == "bernoulli" and dec.latent_dim == 2
    assert _num_params(dec) == (2 * 8 + 8) + (8 * 12 + 12)


def test_mlp_decoder_gaussian_learned_variance_is_a_parameter_that_gets_gradients():
    dec = MLPDecoder(2, 12, hidden=(8,), likelihood="gaussian", rngs=nnx.Rngs(0))
    z = jnp.ones((4, 2))
    _check_pair(dec(z), 4, 12)
    assert _num_params(dec) == (2 * 8 + 8) + (8 * 12 + 12) + 12  # one log-variance per data dimension
    assert_array_equal(dec(z)[1], np.zeros((4, 12)))  # initialised to unit variance
    x = jax.random.normal(jax.random.key(0), (4, 12))

    def loss(dec):
        return -vae_lib.gaussian_log_prob(x, *dec(z)).sum()

    grads = nnx.grad(loss)(dec)
    g = np.asarray(grads["obs_logvar"][...])
    assert g.shape == (12,) and np.all(g != 0)


@pytest.mark.parametrize("obs_logvar", [0.0, -1.5])
def test_mlp_decoder_gaussian_fixed_variance(obs_logvar):
    dec = MLPDecoder(2, 12, hidden=(8,), likelihood="gaussian", obs_logvar=obs_logvar, rngs=nnx.Rngs(0))
    mean, logvar = dec(jnp.ones((4, 2)))
    _check_pair((mean, logvar), 4, 12)
    assert_array_equal(logvar, np.full((4, 12), obs_logvar, np.float32))
    assert _num_params(dec) == (2 * 8 + 8) + (8 * 12 + 12)  # no variance parameter


# Convolutional models: the default (keras-io) sizes are checked by parameter count on an abstract model
# (nnx.eval_shape, nothing is initialised); forward passes use small channel counts, shared by every test.
SMALL = {"channels": (4, 4), "hidden": 4}


def _abstract_num_params(make) -> int:
    return _num_params(nnx.eval_shape(make))


def test_conv_encoder_shapes_and_parameter_count():
    default = _abstract_num_params(lambda: ConvEncoder(2, rngs=nnx.Rngs(0)))  # conv 32, conv 64, dense 16
    assert default == (9 * 1 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 16 + 16) + 2 * (16 * 2 + 2)
    enc = ConvEncoder(2, **SMALL, rngs=nnx.Rngs(0))
    _check_pair(enc(jnp.zeros((3, 784))), 3, 2)
    assert _num_params(enc) == (9 * 1 * 4 + 4) + (9 * 4 * 4 + 4) + (7 * 7 * 4 * 4 + 4) + 2 * (4 * 2 + 2)


@pytest.mark.parametrize("upsample", ["depth_to_space", "transpose"])
def test_conv_decoder_shapes_and_parameter_count(upsample):
    def count(c0, c1):  # dense to 7x7xc0; upsampling c0 -> c0 -> c1; 3x3 convolution c1 -> 1
        dense = 2 * 7 * 7 * c0 + 7 * 7 * c0
        if upsample == "transpose":  # 3x3 transposed convolutions
            ups = (9 * c0 * c0 + c0) + (9 * c0 * c1 + c1)
        else:  # 2x2 convolutions to 4c channels
            ups = (4 * c0 * 4 * c0 + 4 * c0) + (4 * c0 * 4 * c1 + 4 * c1)
        return dense + ups + (9 * c1 * 1 + 1)

    default = _abstract_num_params(lambda: ConvDecoder(2, upsample=upsample, rngs=nnx.Rngs(0)))
    assert default == count(64, 32)
    dec = ConvDecoder(2, channels=SMALL["channels"], upsample=upsample, rngs=nnx.Rngs(0))
    logits = dec(jnp.zeros((3, 2)))
    assert logits.shape == (3, 784) and logits.dtype == jnp.float32
    assert dec.likelihood == "bernoulli" and dec.latent_dim == 2
    assert _num_params(dec) == count(4, 4)


@pytest.mark.parametrize("upsample", ["depth_to_space", "transpose"])
def test_conv_decoder_equals_its_flax_layers_called_directly(upsample):
    # The decoder computes its convolutions its own way; calling its Flax layers must give the same logits.
    dec = ConvDecoder(2, channels=SMALL["channels"], upsample=upsample, rngs=nnx.Rngs(1))
    z = jax.random.normal(jax.random.key(0), (3, 2))
    h = jax.nn.relu(dec.dense(z)).reshape(3, 7, 7, SMALL["channels"][0])
    for up in dec.ups:
        h = jax.nn.relu(up(h) if upsample == "transpose" else depth_to_space(up(h)))
    expected = dec.out(h).reshape(3, 784)
    assert np.std(np.asarray(expected)) > 1e-3  # not a trivial (all-dead) network
    assert_allclose(dec(z), expected, rtol=1e-4, atol=1e-5)


def _depth_to_space_numpy(x: np.ndarray, b: int) -> np.ndarray:
    """``out[n, h*b + i, w*b + j, c] = x[n, h, w, (i*b + j)*C + c]`` with explicit loops."""
    n, h, w, cb = x.shape
    c = cb // (b * b)
    out = np.empty((n, h * b, w * b, c), x.dtype)
    for hh in range(h):
        for ww in range(w):
            for i in range(b):
                for j in range(b):
                    out[:, hh * b + i, ww * b + j, :] = x[:, hh, ww, (i * b + j) * c : (i * b + j + 1) * c]
    return out


@pytest.mark.parametrize("block,channels", [(2, 3), (2, 1), (3, 2)])
def test_depth_to_space_matches_numpy(block, channels):
    x = np.random.default_rng(0).normal(size=(2, 3, 4, channels * block * block)).astype(np.float32)
    got = depth_to_space(jnp.asarray(x), block)
    assert got.shape == (2, 3 * block, 4 * block, channels)
    assert_array_equal(got, _depth_to_space_numpy(x, block))


def test_a_2x2_convolution_and_depth_to_space_contain_the_stride_2_transposed_convolution():
    # ConvDecoder's claim: a 3x3 stride-2 "SAME" transposed convolution equals a 2x2 convolution over input
    # rows {h - 1, h} and columns {w - 1, w} to 4C channels, then depth-to-space. Output pixel
    # (2h + i, 2w + j) is a sum over x[h + dh, w + dw] of linear maps that depend on (dh, dw, i, j) only:
    # read them off the responses to one-hot inputs at (2, 2), check that only dh, dw in {-1, 0} occur,
    # and build the 2x2 convolution from them.
    cin, cout = SMALL["channels"]
    tconv = nnx.ConvTranspose(cin, cout, (3, 3), strides=2, padding="SAME", rngs=nnx.Rngs(0))
    probes = np.zeros((cin, 5, 5, cin), np.float32)
    probes[np.arange(cin), 2, 2, np.arange(cin)] = 1.0
    bias = np.asarray(tconv.bias[...])
    resp = np.asarray(tconv(jnp.asarray(probes))) - bias  # (cin, 10, 10, cout)
    kernel = np.zeros((2, 2, cin, 4 * cout), np.float32)
    for oy in range(10):
        for ox in range(10):
            (h, i), (w, j) = divmod(oy, 2), divmod(ox, 2)
            dh, dw = 2 - h, 2 - w  # the input pixel (2, 2) seen from output block (h, w)
            if dh in (-1, 0) and dw in (-1, 0):
                kernel[dh + 1, dw + 1, :, (i * 2 + j) * cout : (i * 2 + j + 1) * cout] = resp[:, oy, ox]
            else:
                assert np.all(np.abs(resp[:, oy, ox]) < 1e-6), (dh, dw)
    assert np.count_nonzero(kernel) == 9 * cin * cout  # each 3x3 tap used once: 7 of 16 are zero
    conv = nnx.Conv(cin, 4 * cout, (2, 2), padding=((1, 0), (1, 0)), rngs=nnx.Rngs(0))
    conv.kernel[...] = jnp.asarray(kernel)
    conv.bias[...] = jnp.asarray(np.tile(bias, 4))
    x = jax.random.normal(jax.random.key(1), (2, 7, 7, cin))
    assert_allclose(depth_to_space(conv(x)), tconv(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "likelihood,obs_logvar", [("bernoulli", None), ("gaussian", None), ("gaussian", 0.0)]
)
def test_mlp_vae(likelihood, obs_logvar):
    model = mlp_vae(12, 2, hidden=(8,), likelihood=likelihood, obs_logvar=obs_logvar, rngs=nnx.Rngs(0))
    assert isinstance(model, VAE)
    assert model.likelihood == likelihood and model.latent_dim == 2
    # the decoder mirrors the encoder
    assert [layer.kernel.shape for layer in model.encoder.body.layers] == [(12, 8)]
    assert [layer.kernel.shape for layer in model.decoder.body.layers] == [(2, 8)]
    x = jax.random.uniform(jax.random.key(0), (5, 12))
    _check_pair(model.encode(x), 5, 2)
    out = model.decode(jnp.zeros((5, 2)))
    rec = model.reconstruct(x)
    assert rec.shape == (5, 12) and rec.dtype == jnp.float32
    samples = model.sample(jax.random.key(1), 7)
    assert samples.shape == (7, 12) and samples.dtype == jnp.float32
    assert_array_equal(samples, model.sample(jax.random.key(1), 7))
    assert not np.allclose(samples, model.sample(jax.random.key(2), 7))
    # mean_of: sigmoid of the logits, or the Gaussian mean
    expected_mean = jax.nn.sigmoid(out) if likelihood == "bernoulli" else out[0]
    assert_allclose(model.mean_of(out), expected_mean, rtol=1e-6)
    # reconstruct is the decoder's mean at the posterior mean
    assert_allclose(rec, model.mean_of(model.decode(model.encode(x)[0])), rtol=1e-6)
    if likelihood == "bernoulli":
        assert np.all((np.asarray(rec) > 0) & (np.asarray(rec) < 1))


def test_vae_sample_decodes_prior_draws():
    model = mlp_vae(12, 2, hidden=(8,), rngs=nnx.Rngs(0))
    key = jax.random.key(3)
    z = jax.random.normal(key, (5, 2))  # the documented draw: z ~ N(0, I)
    assert_allclose(model.sample(key, 5), jax.nn.sigmoid(model.decode(z)), rtol=1e-6)


@pytest.mark.parametrize("upsample", ["depth_to_space", "transpose"])
def test_conv_vae(upsample):
    model = conv_vae(2, **SMALL, upsample=upsample, rngs=nnx.Rngs(0))
    assert model.likelihood == "bernoulli" and model.latent_dim == 2
    assert model.decoder.upsample == upsample
    # the decoder mirrors the encoder's channels
    assert [c.kernel.shape[-1] for c in model.encoder.convs] == [4, 4]
    x = jax.random.uniform(jax.random.key(0), (3, 784))
    _check_pair(model.encode(x), 3, 2)
    rec = model.reconstruct(x)
    assert rec.shape == (3, 784) and rec.dtype == jnp.float32
    assert np.all((np.asarray(rec) > 0) & (np.asarray(rec) < 1))
    assert model.sample(jax.random.key(1), 4).shape == (4, 784)
    # the objectives accept the model's methods as plain callables
    terms = vae_lib.elbo(jax.random.key(2), jnp.round(x), model.encode, model.decode)
    assert np.isfinite(float(terms.elbo))


def test_conv_vae_default_is_the_keras_io_architecture():
    model = nnx.eval_shape(lambda: conv_vae(2, rngs=nnx.Rngs(0)))
    assert [c.kernel.shape for c in model.encoder.convs] == [(3, 3, 1, 32), (3, 3, 32, 64)]
    assert model.encoder.dense.kernel.shape == (7 * 7 * 64, 16)
    assert model.decoder.dense.kernel.shape == (2, 7 * 7 * 64)
    assert model.decoder.upsample == "depth_to_space"


def test_conv_encoder_reads_rows_of_the_image():
    # Flattening is row by row (28x28 -> 784): a model fed a transposed image sees a different image.
    enc = ConvEncoder(2, **SMALL, rngs=nnx.Rngs(0))
    img = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    img[0, :14] = 0.0  # top half dark: not symmetric under transposition
    a, _ = enc(jnp.asarray(img.reshape(1, 784)))
    b, _ = enc(jnp.asarray(img.transpose(0, 2, 1).reshape(1, 784)))
    assert np.all(np.asarray(a) != 0) and not np.allclose(a, b)
    # and equals the convolution applied to the image directly
    h = jnp.asarray(img[..., None])
    for conv in enc.convs:
        h = jax.nn.relu(conv(h))
    h = jax.nn.relu(enc.dense(h.reshape(1, -1)))
    assert_allclose(a, enc.mean(h), rtol=1e-5, atol=1e-6)


# --- the CPU convolution kernels against the Flax layers (vae_lib._cpu_conv) ----------------------------


@pytest.mark.parametrize(
    "make, shape",
    [
        pytest.param(
            lambda r: nnx.Conv(3, 5, (3, 3), strides=2, padding="SAME", rngs=r), (2, 9, 9, 3), id="stride-2"
        ),
        pytest.param(lambda r: nnx.Conv(3, 5, (3, 3), padding="SAME", rngs=r), (2, 8, 8, 3), id="stride-1"),
        pytest.param(
            lambda r: nnx.Conv(6, 1, (3, 3), padding="SAME", rngs=r), (2, 8, 8, 6), id="few-outputs"
        ),
        pytest.param(
            lambda r: nnx.Conv(3, 8, (2, 2), padding=((1, 0), (1, 0)), rngs=r),
            (2, 7, 7, 3),
            id="subpixel-window",
        ),
        pytest.param(
            lambda r: nnx.ConvTranspose(4, 3, (3, 3), strides=2, padding="SAME", rngs=r),
            (2, 7, 7, 4),
            id="transpose",
        ),
    ],
)
def test_cpu_convolutions_equal_the_flax_layers(make, shape):
    from vae_lib import _cpu_conv

    layer = make(nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.key(1), layer.bias.shape)  # a non-zero bias
    x = jax.random.normal(jax.random.key(2), shape)

    @functools.partial(jax.jit, static_argnums=1)  # one compilation per form, not one per eager operation
    def value_and_grad(x, matrix_form):
        f = (lambda x: _cpu_conv.apply(layer, x)) if matrix_form else layer
        return f(x), jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(x)  # and the gradient, the reason for it

    (got, grad), (expected, expected_grad) = value_and_grad(x, True), value_and_grad(x, False)
    assert got.shape == expected.shape
    assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)


# --- the linear VAE and the decoder's variance ----------------------------------------------------------


def test_mlp_vae_without_hidden_layers_is_linear():
    model = mlp_vae(6, 2, hidden=(), likelihood="gaussian", obs_logvar="shared", rngs=nnx.Rngs(0))
    assert len(model.encoder.body.layers) == 0 and len(model.decoder.body.layers) == 0
    z1, z2 = jax.random.normal(jax.random.key(0), (2, 3, 2))
    a = 0.3
    mix = model.decode(a * z1 + (1 - a) * z2)[0]
    assert_allclose(mix, a * model.decode(z1)[0] + (1 - a) * model.decode(z2)[0], rtol=1e-5, atol=1e-6)
    # decode(z) = z K + b exactly, K the only kernel
    k, b = model.decoder.out.kernel[...], model.decoder.out.bias[...]
    assert_allclose(model.decode(z1)[0], np.asarray(z1) @ np.asarray(k) + np.asarray(b), rtol=1e-5, atol=1e-6)


def test_shared_observation_variance_is_one_learned_scalar():
    dec = MLPDecoder(2, 12, hidden=(8,), likelihood="gaussian", obs_logvar="shared", rngs=nnx.Rngs(0))
    assert dec.obs_logvar.shape == ()
    assert _num_params(dec) == (2 * 8 + 8) + (8 * 12 + 12) + 1
    dec.obs_logvar[...] = jnp.float32(-1.25)
    mean, logvar = dec(jnp.ones((4, 2)))
    assert_array_equal(logvar, np.full((4, 12), -1.25, np.float32))
    x = jax.random.normal(jax.random.key(0), (4, 12))
    g = nnx.grad(lambda d: -vae_lib.gaussian_log_prob(x, *d(jnp.ones((4, 2)))).sum())(dec)
    # d/dlv of -sum log N(x; m, e^lv) = sum_{n,d} (1 - (x - m)^2 e^-lv) / 2, one number for all pixels
    expected = 0.5 * np.sum(1.0 - (np.asarray(x) - np.asarray(mean)) ** 2 * np.exp(1.25))
    assert_allclose(g["obs_logvar"][...], expected, rtol=1e-4)
    # "per_pixel" is the default (None) and is one log-variance per data dimension
    per_pixel = MLPDecoder(
        2, 12, hidden=(8,), likelihood="gaussian", obs_logvar="per_pixel", rngs=nnx.Rngs(0)
    )
    assert per_pixel.obs_logvar.shape == (12,)
