"""Conditional VAEs: a linear-Gaussian CVAE whose ``log p(x|y)`` is closed form, checked through every
evaluation function; ``decode_samples`` with labels; training, sampling and checkpoints with labels."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose
from scipy import stats

import vae_lib
from vae_lib import data

D, Z, C, S = 6, 2, 3, 0.5


@pytest.fixture(scope="module")
def cvae():
    """``p(z) = N(0, I)``, ``p(x|z, y) = N(W z + V y + b, s^2 I)`` as a linear CVAE with the exact posterior
    ``q(z|x, y) = N(a^T (x - V y - b), diag(var))`` (``W`` has orthogonal columns, so it is diagonal)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(D, Z)))
    W, V, b = q * rng.uniform(0.5, 1.5, Z), rng.normal(size=(D, C)) * 2.0, rng.normal(size=D)
    var = 1.0 / (1.0 + np.sum(W**2, axis=0) / S**2)
    a = W * var / S**2  # (D, Z)
    model = vae_lib.mlp_vae(
        D, Z, hidden=(), likelihood="gaussian", obs_logvar=2 * math.log(S), num_classes=C, rngs=nnx.Rngs(0)
    )
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    model.decoder.out.kernel[...] = f32(np.concatenate([W.T, V.T]))  # [z, y] @ kernel: (Z + C, D)
    model.decoder.out.bias[...] = f32(b)
    model.encoder.mean.kernel[...] = f32(np.concatenate([a, -V.T @ a]))  # [x, y] @ kernel: (D + C, Z)
    model.encoder.mean.bias[...] = f32(-b @ a)
    model.encoder.logvar.kernel[...] = f32(np.zeros((D + C, Z)))
    model.encoder.logvar.bias[...] = f32(np.log(var))
    labels = rng.integers(0, C, 9)
    zs = rng.normal(size=(9, Z))
    x = (zs @ W.T + V[:, labels].T + b + S * rng.normal(size=(9, D))).astype(np.float32)
    cov = W @ W.T + S**2 * np.eye(D)
    log_px_y = np.array(
        [stats.multivariate_normal(V[:, c] + b, cov).logpdf(xi) for xi, c in zip(x, labels, strict=True)]
    )
    return model, x, labels, log_px_y


def test_every_evaluation_function_gives_the_closed_form_log_p_x_given_y(cvae):
    model, x, labels, log_px_y = cvae
    one_hot = np.eye(C, dtype=np.float32)[labels]
    for y in (labels, one_hot):  # integer labels and one-hot rows are the same conditioning
        iw = vae_lib.importance_log_likelihood(
            jax.random.key(0), model, x, y=y, num_samples=20, sample_chunk=10
        )
        assert_allclose(iw, log_px_y, atol=2e-4)  # the exact posterior: every weight is p(x|y)
    elbo = vae_lib.evaluate_elbo(jax.random.key(1), model, x, y=labels, analytic_kl=False, batch_size=4)
    assert_allclose(elbo.elbo, log_px_y.mean(), atol=2e-4)
    quad = vae_lib.quadrature_log_likelihood(model, x, y=labels, num_points=300)
    assert_allclose(quad, log_px_y, atol=1e-3)
    # the labels matter: with the wrong ones, log p(x|y) is far lower
    wrong = vae_lib.importance_log_likelihood(jax.random.key(0), model, x, y=(labels + 1) % C, num_samples=20)
    assert np.all(np.asarray(wrong) < log_px_y - 1.0)


def test_decode_samples_with_labels_equals_decoding_each_sample(cvae):
    model = cvae[0]
    z = jax.random.normal(jax.random.key(2), (4, 5, Z))  # (K, B, Z)
    y = jax.nn.one_hot(jnp.arange(5) % C, C)  # (B, C)
    mean, logvar = vae_lib.decode_samples(model.decode, z, y)
    assert mean.shape == logvar.shape == (4, 5, D)
    for k in range(4):
        assert_allclose(mean[k], model.decode(z[k], y)[0], rtol=1e-6, atol=1e-6)
    plain = vae_lib.mlp_vae(D, Z, hidden=(4,), rngs=nnx.Rngs(1))
    logits = vae_lib.decode_samples(plain.decode, z)
    assert_allclose(logits[2], plain.decode(z[2]), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def digits_cvae(digits):
    x, y = digits.x_train[:2000], digits.y_train[:2000]
    model = vae_lib.mlp_vae(
        784, 2, hidden=(128,), num_classes=10, rngs=nnx.Rngs(0)
    )  # 2-D: y must carry the class
    history = vae_lib.fit(
        model,
        x,
        key=jax.random.key(0),
        epochs=6,
        batch_size=100,
        learning_rate=2e-3,
        y_train=y,
        x_test=digits.x_test[:200],
        y_test=digits.y_test[:200],
        progress=False,
    )
    return model, history, digits


def test_a_conditional_vae_generates_the_digit_it_is_asked_for(digits_cvae):
    model, history, digits = digits_cvae
    assert history["test_elbo"][-1] > history["test_elbo"][0]
    # label each sample by its nearest class mean of the training digits (81% right on real test digits):
    # most samples are the digit asked for (about 70% here; chance is 10%)
    centres = np.stack([digits.x_train[digits.y_train == c].mean(0) for c in range(10)])  # (10, 784)
    asked = np.repeat(np.arange(10), 20)
    samples = np.asarray(model.sample(jax.random.key(1), 200, y=asked))
    nearest = np.argmin(((samples[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == asked) > 0.5, np.mean(nearest == asked)
    one_hot = jax.nn.one_hot(asked, 10)
    assert_allclose(model.sample(jax.random.key(1), 200, y=one_hot), samples, rtol=1e-6)


def test_a_conditional_run_resumes_bitwise(tmp_path, digits):
    x, y = digits.x_train[:300], digits.y_train[:300]
    kw = dict(key=jax.random.key(3), batch_size=100, y_train=y, progress=False)
    make = lambda seed: vae_lib.mlp_vae(784, 2, hidden=(8,), num_classes=10, rngs=nnx.Rngs(seed))  # noqa: E731
    full = make(0)
    h_full = vae_lib.fit(full, x, epochs=3, **kw)
    vae_lib.fit(make(0), x, epochs=1, checkpoint_path=tmp_path / "c.npz", **kw)
    resumed = make(7)
    h_res = vae_lib.fit(resumed, x, epochs=3, checkpoint_path=tmp_path / "c.npz", resume=True, **kw)
    assert h_res["train_loss"] == h_full["train_loss"]
    for a, b in zip(jax.tree.leaves(nnx.state(full)), jax.tree.leaves(nnx.state(resumed)), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    with pytest.raises(ValueError, match="does not match"):  # an unconditional model cannot resume it
        vae_lib.fit(
            vae_lib.mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(0)),
            x,
            epochs=3,
            key=jax.random.key(3),
            batch_size=100,
            checkpoint_path=tmp_path / "c.npz",
            resume=True,
            progress=False,
        )


def test_fit_gets_labels_of_binarized_digits(fast_mnist):
    split = data.load_mnist5k()
    model = vae_lib.mlp_vae(784, 2, hidden=(8,), num_classes=10, rngs=nnx.Rngs(0))
    h = vae_lib.fit(
        model,
        split.x_train[:200],
        y_train=split.y_train[:200],
        key=jax.random.key(0),
        epochs=1,
        batch_size=100,
        binarize=True,
        progress=False,
    )
    assert np.isfinite(h["train_elbo"][0])
