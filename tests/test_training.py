"""fit: it lowers the loss, trains in place, is reproducible from its key, returns the documented history."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from numpy.testing import assert_allclose, assert_array_equal

import vae_lib
from vae_lib import data, evaluate_elbo, fit, mlp_vae


def _params(model):
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.fixture(scope="module")
def small_digits(digits):
    """1,000 training and 200 test digits, binary (threshold at 0.5)."""
    return digits.x_train[:1000], digits.x_test[:200]


def test_fit_lowers_the_loss_on_digits_with_dynamic_binarization(fast_mnist):
    split = data.load_mnist5k()  # grey levels
    x_train = split.x_train[:1000]
    x_test = data.binarize(jax.random.key(0), split.x_test[:200])
    model = mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(0))
    before = float(evaluate_elbo(jax.random.key(1), model, x_test).elbo)
    history = fit(
        model,
        x_train,
        key=jax.random.key(2),
        epochs=10,
        batch_size=50,
        learning_rate=3e-3,
        binarize=True,
        x_test=x_test,
        progress=False,
    )  # 200 steps
    after = float(evaluate_elbo(jax.random.key(1), model, x_test).elbo)
    # an untrained model is near 784 log 2 = 543 nats or worse; 200 Adam steps reach about 215
    assert history["train_loss"][0] > history["train_loss"][-1] + 100, history["train_loss"]
    assert before < -450 and after > -250, (before, after)
    assert abs(history["test_elbo"][-1] - after) < 5  # the history's test ELBO is the model's
    # the loss falls most in the first epochs and keeps falling on average
    assert np.mean(history["train_loss"][-3:]) < np.mean(history["train_loss"][3:6])


def test_fit_gaussian_decoder_on_toy_data_with_beta():
    x = data.toy_2d("two_moons", 1000, seed=0)
    model = mlp_vae(2, 2, hidden=(8,), likelihood="gaussian", rngs=nnx.Rngs(0))
    history = fit(
        model,
        x,
        key=jax.random.key(0),
        epochs=20,
        batch_size=50,
        learning_rate=1e-2,
        beta=0.5,
        progress=False,
    )  # 400 steps
    # the objective rises steadily (about 3.1 -> 1.0 nats per point)
    assert history["train_loss"][-1] < history["train_loss"][0] - 1.0, history["train_loss"]
    # beta < 1: loss = -(rec - beta kl) = -elbo - (1 - beta) kl < -elbo
    assert all(loss < -e for loss, e in zip(history["train_loss"], history["train_elbo"], strict=True))
    # the learned log-variance moved well below its initial 0 (unit variance is far too wide here)
    logvar = np.asarray(model.decoder.obs_logvar[...])
    assert np.all(logvar < -1.0), logvar
    # without x_test the history has no test entries
    assert set(history) == {"epoch", "train_loss", "train_elbo", "seconds"}
    assert len(history["train_loss"]) == 20


@pytest.fixture(scope="module")
def three_runs(small_digits):
    """Two runs with the same key and one with another, from the same initial parameters."""
    x, x_test = small_digits
    runs = []
    for seed in (0, 0, 1):
        model = mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(0))
        history = fit(
            model, x, key=jax.random.key(seed), epochs=3, batch_size=250, x_test=x_test, progress=False
        )
        runs.append((model, history))
    return runs


def test_same_key_same_run_and_different_key_different_run(three_runs):
    (m1, h1), (m2, h2), (m3, h3) = three_runs
    for k in h1:
        if k != "seconds":
            assert h1[k] == h2[k], k  # bitwise: float lists compared exactly
    for a, b in zip(_params(m1), _params(m2), strict=True):
        assert_array_equal(a, b)
    assert h1["train_loss"] != h3["train_loss"]
    assert any(not np.array_equal(a, c) for a, c in zip(_params(m1), _params(m3), strict=True))


def test_history_keys_lengths_and_relations(three_runs):
    model, history = three_runs[0]
    assert set(history) == {
        "epoch",
        "train_loss",
        "train_elbo",
        "seconds",
        "test_elbo",
        "test_reconstruction",
        "test_kl",
    }
    assert all(len(v) == 3 for v in history.values())
    assert history["epoch"] == [1, 2, 3]
    assert all(isinstance(v, float) for k, vs in history.items() if k != "epoch" for v in vs)
    assert all(s > 0 for s in history["seconds"])
    # beta = 1: the loss is minus the ELBO
    assert history["train_loss"] == [-e for e in history["train_elbo"]]
    assert_allclose(
        history["test_elbo"], np.subtract(history["test_reconstruction"], history["test_kl"]), rtol=1e-5
    )
    assert all(kl > 0 for kl in history["test_kl"])


def test_fit_trains_in_place(three_runs):
    model, _ = three_runs[0]
    fresh = mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(0))
    assert isinstance(model, vae_lib.VAE)
    assert all(a.shape == b.shape for a, b in zip(_params(fresh), _params(model), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(_params(fresh), _params(model), strict=True))


@pytest.mark.parametrize("shape", [(7,), (3, 128, 784), (2, 5)])
def test_fused_binarization_equals_jax_random_bernoulli_bit_for_bit(shape):
    """fit's fast Bernoulli draw (fused Threefry rounds) gives exactly jax.random.bernoulli's bits."""
    from vae_lib.training import _bernoulli

    p = jax.random.uniform(jax.random.key(5), shape)
    for key in (jax.random.key(11), jax.random.PRNGKey(11), jax.random.key(12)):
        got = jax.jit(_bernoulli)(key, p)
        assert got.shape == shape and got.dtype == jnp.bool_
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.random.bernoulli(key, p)))
    p16 = p.astype(jnp.bfloat16)  # another dtype: the fallback path, still jax.random.bernoulli's bits
    k = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(_bernoulli(k, p16)), np.asarray(jax.random.bernoulli(k, p16)))
