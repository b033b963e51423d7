"""fit: it lowers the loss, trains in place, is reproducible from its key, returns the documented history."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from numpy.testing import assert_allclose, assert_array_equal
from scipy import special, stats

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
    from vae_lib._fast_bernoulli import bernoulli as _bernoulli

    p = jax.random.uniform(jax.random.key(5), shape)
    for key in (jax.random.key(11), jax.random.PRNGKey(11), jax.random.key(12)):
        got = jax.jit(_bernoulli)(key, p)
        assert got.shape == shape and got.dtype == jnp.bool_
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.random.bernoulli(key, p)))
    p16 = p.astype(jnp.bfloat16)  # another dtype: the fallback path, still jax.random.bernoulli's bits
    k = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(_bernoulli(k, p16)), np.asarray(jax.random.bernoulli(k, p16)))


# --- the hooks: IWAE objective, beta as a float or a schedule, free bits, one compilation -----------------
# Checks with the learning rate 0 (optax.sgd(0.0)): the parameters stay put, so the history's per-epoch
# means are Monte Carlo estimates at known parameters, compared with independent closed forms or NumPy.


FROZEN = optax.sgd(0.0)  # one object: fit's compiled epoch is reused across calls with the same optimizer


@pytest.fixture
def frozen(linear_gaussian):
    """A linear-Gaussian model (to be built as a VAE with a poorer-than-exact encoder), and its data."""
    lg = linear_gaussian(seed=3, data_dim=6, latent_dim=2)
    return lg, lg.sample_x(seed=4, n=64)


def _fit_frozen(lg, x, **kw):
    model = lg.vae(shift=0.6, var_factor=2.0)
    args = dict(key=jax.random.key(0), batch_size=16, optimizer=FROZEN, progress=False)
    return model, fit(model, x, **(args | kw))


def test_iwae_objective_trains_on_the_importance_weighted_bound(frozen):
    lg, x = frozen
    k, epochs = 5, 40
    model, history = _fit_frozen(lg, x, epochs=epochs, objective="iwae", num_samples=k)
    # independent NumPy estimate of E[IWAE_k] over the data set, with the encoder's q
    mean, logvar = (np.asarray(a, np.float64) for a in model.encode(jnp.asarray(x)))
    rng = np.random.default_rng(0)
    reps = 200
    z = mean[None, None] + np.exp(0.5 * logvar)[None, None] * rng.normal(size=(reps, k, *mean.shape))
    x64 = x.astype(np.float64)
    log_w = (
        stats.norm.logpdf(x64, z @ lg.W.T + lg.b, lg.s).sum(-1)
        + stats.norm.logpdf(z).sum(-1)
        - stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
    )  # (reps, k, N)
    iwae_np = special.logsumexp(log_w, axis=1) - np.log(k)  # (reps, N)
    per_epoch = -np.asarray(history["train_loss"])  # each epoch: the mean over the data of one IWAE_k draw
    se = np.hypot(per_epoch.std(ddof=1) / np.sqrt(epochs), iwae_np.mean(1).std(ddof=1) / np.sqrt(reps))
    assert abs(per_epoch.mean() - iwae_np.mean()) < 4 * se, (per_epoch.mean(), iwae_np.mean(), se)
    # the history's ELBO is the mean log weight: below the bound, and unbiased for the closed-form ELBO
    elbo_exact = lg.elbo(x, mean, logvar).mean()
    train_elbo = np.asarray(history["train_elbo"])
    assert np.mean(train_elbo) < per_epoch.mean() - 0.05
    assert abs(train_elbo.mean() - elbo_exact) < 4 * train_elbo.std(ddof=1) / np.sqrt(epochs)


def test_iwae_training_raises_the_bound_more_than_elbo_training(fast_mnist):
    split = data.load_mnist5k()
    x_train, x_test = split.x_train[:1000], data.binarize(jax.random.key(0), split.x_test[:200])
    bounds = {}
    for objective in ("elbo", "iwae"):
        model = mlp_vae(784, 4, hidden=(32,), rngs=nnx.Rngs(0))
        fit(
            model,
            x_train,
            key=jax.random.key(1),
            epochs=8,
            batch_size=50,
            learning_rate=3e-3,
            binarize=True,
            objective=objective,
            num_samples=8,
            progress=False,
        )
        ll = vae_lib.importance_log_likelihood(jax.random.key(2), model, x_test, num_samples=200)
        bounds[objective] = np.asarray(ll)
    diff = bounds["iwae"] - bounds["elbo"]  # paired over the same test digits
    assert diff.mean() > 0, diff.mean()  # Burda et al.: the IWAE-trained model has the higher log p(x)


def test_beta_schedule_is_evaluated_at_every_step_inside_the_compiled_epoch(frozen):
    """All rows equal: every batch has the same KL, so train_loss + train_elbo = KL * (mean beta - 1)."""
    from vae_lib.training import _train_epoch

    lg, x = frozen
    x_same = np.repeat(x[:1], 64, axis=0)
    schedule = optax.linear_schedule(0.0, 1.0, transition_steps=10)  # steps 0..9 rise, then 1
    model, history = _fit_frozen(lg, x_same, epochs=4, beta=schedule)  # 4 steps per epoch
    mean, logvar = (np.asarray(a, np.float64) for a in model.encode(jnp.asarray(x[:1])))
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar)  # closed form, NumPy
    betas = np.minimum(np.arange(16) / 10.0, 1.0).reshape(4, 4)  # the schedule at steps 0..15
    got = np.asarray(history["train_loss"]) + np.asarray(history["train_elbo"])
    assert_allclose(got, kl * (betas.mean(axis=1) - 1.0), rtol=1e-4, atol=1e-4)
    assert_allclose(history["beta"], betas[:, -1], rtol=1e-6)
    # a constant beta is an argument of the compiled epoch, not part of it: no new compilation
    sizes = []
    for beta in (0.5, 2.0):
        _, h = _fit_frozen(lg, x_same, epochs=1, beta=beta)
        assert_allclose(h["train_loss"][0] + h["train_elbo"][0], kl * (beta - 1.0), rtol=1e-4, atol=1e-4)
        sizes.append(_train_epoch._cache_size())
    assert sizes[0] == sizes[1]


def test_free_bits_change_the_objective_only(frozen):
    """All rows equal: train_loss + train_elbo = sum_j max(lam, KL_j) - sum_j KL_j, from NumPy."""
    lg, x = frozen
    x_same = np.repeat(x[:1], 64, axis=0)
    model = lg.vae(shift=0.6, var_factor=2.0)
    mean, logvar = (np.asarray(a, np.float64) for a in model.encode(jnp.asarray(x[:1])))
    kl_j = 0.5 * (np.exp(logvar) + mean**2 - 1.0 - logvar)[0]  # (2,)
    lam = float(np.mean(kl_j))  # between the two dimensions' KL: one is lifted to lam, one is not
    assert kl_j.min() < lam < kl_j.max()
    _, history = _fit_frozen(lg, x_same, epochs=2, free_bits=lam)
    got = np.asarray(history["train_loss"]) + np.asarray(history["train_elbo"])
    assert_allclose(got, np.sum(np.maximum(lam, kl_j)) - np.sum(kl_j), rtol=1e-4, atol=1e-4)
    # the reported ELBO is the true one: the same as without free bits, same key
    _, plain = _fit_frozen(lg, x_same, epochs=2)
    assert_allclose(history["train_elbo"], plain["train_elbo"], rtol=1e-6)


def test_fit_compiles_its_epoch_once_per_configuration_and_shape(small_digits):
    from vae_lib.training import _train_epoch

    x, _ = small_digits
    kw = dict(epochs=1, batch_size=250, progress=False)
    fit(mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(0)), x, key=jax.random.key(0), **kw)
    size = _train_epoch._cache_size()
    # another model of the same architecture, another key, another initialization: the same program
    fit(mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(5)), x, key=jax.random.key(1), **kw)
    assert _train_epoch._cache_size() == size
    fit(mlp_vae(784, 2, hidden=(8,), rngs=nnx.Rngs(5)), x[:500], key=jax.random.key(1), **kw)  # new shape
    assert _train_epoch._cache_size() == size + 1


_RESUME_SCRIPT = """
import sys, jax, numpy as np
from flax import nnx
import vae_lib
from vae_lib import data
x = data.load_mnist5k().x_train[:256]
m = vae_lib.mlp_vae(784, 4, hidden=(16,), rngs=nnx.Rngs(0))
vae_lib.fit(m, x, key=jax.random.key(1), epochs=int(sys.argv[1]), batch_size=64, binarize=True,
            progress=False, checkpoint_path=sys.argv[2], resume=True)
np.savez(sys.argv[3], *[np.asarray(a) for a in jax.tree.leaves(nnx.state(m))])
"""


def test_a_run_resumes_in_a_new_python_process(tmp_path):
    """The run's settings stored in the checkpoint read the same in another process (another hash seed,
    other memory addresses), so a resume there continues the run bitwise."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ckpt, outs = tmp_path / "run.npz", [tmp_path / "one.npz", tmp_path / "two.npz", tmp_path / "whole.npz"]
    for seed, (epochs, path, out) in enumerate(
        [(1, ckpt, outs[0]), (2, ckpt, outs[1]), (2, tmp_path / "w.npz", outs[2])]
    ):
        env = {**os.environ, "PYTHONHASHSEED": str(seed + 1), "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", _RESUME_SCRIPT, str(epochs), str(path), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    resumed, whole = np.load(outs[1]), np.load(outs[2])
    for name in whole.files:
        assert_array_equal(resumed[name], whole[name])
