# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 4 — VAEs on real handwritten digits
#
# Chapters 1 to 3 used data small enough to see whole. This chapter trains variational autoencoders on
# real images: 5,000 MNIST digits (28x28 pixels, 784 numbers each) that ship with the project, so
# everything runs offline on a laptop CPU.
#
# **What you will learn**
#
# - Why a Bernoulli decoder needs binary pixels (on grey levels its "ELBO" is a valid but very loose bound,
#   at least 543 nats below the log-density it bounds), and the standard way to binarize MNIST.
# - How to train and read an MLP VAE and a convolutional VAE on digits: test ELBO, reconstructions,
#   samples from the prior.
# - What a 2-D latent space looks like: the encoded test digits coloured by class, the decoded manifold,
#   the *aggregate posterior* against the prior; and what a 20-D latent buys.
# - What interpolating between two codes shows, and why the midpoint of a straight line shrinks in high
#   dimension (spherical interpolation keeps the norm).
# - Whether the VAE's code space still has Chapter 1's *holes*, measured with Chapter 1's own metrics, and
#   what the KL term does and does not do about them:
#   $\mathbb{E}_x \mathrm{KL}(q(z \mid x) \,\|\, p(z)) = I(x; z) + \mathrm{KL}(q(z) \,\|\, p(z))$.
# - How far the ELBO is from $\log p(x)$: exact for the 2-D model by quadrature, importance-sampled with
#   $k = 1000$ and $k = 5000$ for the 20-D model, with standard errors.
#
# **Prerequisites**: Chapter 2 (the ELBO, the reparameterization trick, the Bernoulli decoder, the
# importance-weighted bound) and Chapter 3 (reading a 2-D latent space, the aggregate posterior, the gap
# between the ELBO and $\log p(x)$). Chapter 1's autoencoders and its two "holes" metrics are used in
# section 7. Notation as in Chapter 2: encoder $q_\phi(z \mid x) = \mathcal{N}(\mu, \operatorname{diag}
# \sigma^2)$, decoder $p_\theta(x \mid z)$, prior $p(z) = \mathcal{N}(0, I)$, and
# $\mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q - \log p]$, always written with both arguments.
#
# All log-likelihoods and ELBOs here are in **nats per digit**: summed over the 784 pixels and over the
# latent dimensions, averaged over digits. A "$\pm$" is one standard error: over the 1,000 test digits for
# a data-set average, or, for the difference of two numbers computed on the same digits, over the
# per-digit differences (a *paired* standard error, much smaller, since digits differ from each other far
# more than the methods do). Each model is trained once, so no standard error covers the spread over
# training runs.

# %%
import math
import os
import sys
import time

import flax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import vae_lib
from vae_lib.data import binarize, load_mnist5k
from vae_lib.diagnostics import active_units, elbo_surgery, hole_fraction, kl_per_dimension
from vae_lib.plotting import decoded_manifold, density_contours, image_grid, latent_scatter, training_curves

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()

key = jax.random.key(4)  # the chapter's one seed; every random draw below uses a key split from it
(k_bin_test, k_bin_show, k_bin_train, k_init20, k_fit20, k_initc, k_fitc, k_init2, k_fit2, k_eval, k_samples,
 k_cb, k_post, k_interp, k_holes, k_surgery, k_iwae, k_ex1, k_ex2) = jax.random.split(key, 19)  # fmt: skip

# %% [markdown]
# ## 1. The data, and why we binarize
#
# `vae_lib.data.load_mnist5k()` returns 5,000 real MNIST digits, 500 of each class, split once and for
# all into 4,000 training and 1,000 test digits (400 and 100 per class). Pixels are grey levels in
# $[0, 1]$, flattened row by row into vectors of 784 numbers.

# %%
# NBVAL_CHECK_OUTPUT
digits = load_mnist5k()
x_train, y_train, x_test, y_test = digits
print("train:", x_train.shape, x_train.dtype, " test:", x_test.shape)
print("digits per class, train:", np.bincount(y_train).tolist())
print("digits per class, test: ", np.bincount(y_test).tolist())
stroke = x_test > 0  # every pixel that is not background
print(f"test pixels that are not 0: {stroke.mean():.1%}")
print(
    f"of those, strictly between 0 and 1: {(x_test < 1)[stroke].mean():.1%}, exactly 1: {(x_test == 1)[stroke].mean():.1%}"
)
assert abs((x_test == 1)[stroke].mean() - 0.035) < 0.005

# %% [markdown]
# Most pixels are exactly 0 (background), but almost every pixel of a stroke is a grey level: only about
# 3.5% of the stroke pixels are exactly 1.
#
# **Why a Bernoulli decoder needs 0/1 pixels.** The decoder of Chapter 2 gives each pixel a probability
# $\lambda_d$ of being on, and the ELBO's reconstruction term is the Bernoulli log-probability
# $\log p_\theta(x \mid z) = \sum_d x_d \log \lambda_d + (1 - x_d) \log(1 - \lambda_d)$. For $x_d \in \{0, 1\}$
# the two outcomes' probabilities $\lambda$ and $1 - \lambda$ add up to one. Plug in a grey level and the
# formula still returns a number, but as a function of $x \in [0, 1]$, $\lambda^x (1-\lambda)^{1-x}$
# integrates to $1 / C(\lambda)$, with
#
# $$
# C(\lambda) = \frac{2 \operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda} \;\ge\; 2 \qquad (C(\tfrac12) = 2),
# $$
#
# the normalizing constant of the **continuous Bernoulli** density
# $\mathcal{CB}(x; \lambda) = C(\lambda)\,\lambda^x (1-\lambda)^{1-x}$ on $[0, 1]$ (Loaiza-Ganem & Cunningham,
# 2019). So, pixel by pixel, $\log \text{Bern}(x; \lambda) = \log \mathcal{CB}(x; \lambda) - \log C(\lambda)$,
# and the grey-level "ELBO" equals the ELBO of the continuous-Bernoulli model with the same networks minus
# $\mathbb{E}_q \sum_d \log C(\lambda_d)$. It is therefore a **valid lower bound** on that model's
# log-density $\log p_{\mathcal{CB}}(x)$ of the grey image, but a **very loose** one: at least
# $784 \log 2 \approx 543$ nats per digit below that model's own ELBO (section 2 measures how much on these
# digits). It can serve as a training loss (it is the cross-entropy), but its value says little about the
# model, and it cannot be compared with the log-likelihoods of binary digits reported in papers.
#
# The cell below checks the closed form $\int_0^1 \lambda^x (1-\lambda)^{1-x}\,dx = 1 / C(\lambda)$ against
# numerical integration.


# %%
# NBVAL_CHECK_OUTPUT
def log_cb_normalizer(logits):
    """log C(lambda) of the continuous Bernoulli, from logits: C = eta / tanh(eta / 2), 2 at eta = 0."""
    eta = jnp.asarray(logits)
    small = jnp.abs(eta) < 1e-3
    safe = jnp.where(small, 1.0, eta)
    return jnp.log(jnp.where(small, 2.0 + eta**2 / 6.0, safe / jnp.tanh(safe / 2.0)))


xs = np.linspace(0.0, 1.0, 100_001)
for lam in (0.5, 0.9, 0.99):
    numeric = np.trapezoid(lam**xs * (1 - lam) ** (1 - xs), xs)
    c = float(np.exp(log_cb_normalizer(np.log(lam / (1 - lam)))))
    assert abs(numeric - 1 / c) < 1e-6
    print(f"lambda = {lam:<4}  sum over x in {{0, 1}}: {lam + (1 - lam):.3f}   integral over [0, 1]: "
          f"{numeric:.3f}   C(lambda) = {c:.3f}")  # fmt: skip

# %% [markdown]
# So we make the data binary, as many papers that report MNIST log-likelihoods do (Salakhutdinov &
# Murray, 2008): read each grey level as the probability that the pixel is on, and draw
# $x^{\text{bin}}_d \sim \text{Bernoulli}(x_d)$. Two uses:
#
# - **Training: dynamic binarization.** `vae_lib.fit(..., binarize=True)` draws a fresh binarization
#   every time a batch is used. The model never sees the same binary image twice, which acts as data
#   augmentation: it fits the *distribution* of binary images that the grey levels define.
# - **Evaluation: one fixed binarization.** A test ELBO must be a number about fixed data, so the test
#   set is binarized once, with its own key (`vae_lib.data.binarize`), and every model in this chapter is
#   evaluated on the same binary test digits. (`fit` refuses a grey-level `x_test` for a Bernoulli
#   decoder, for the reason above.)
#
# A binarization keeps each pixel's grey level as its expected value, so the mean brightness of the test
# set is kept, up to sampling noise (checked below).

# %%
x_test_bin = binarize(k_bin_test, x_test)  # (1000, 784) of 0.0 and 1.0, fixed for the whole chapter
assert set(np.unique(x_test_bin).tolist()) == {0.0, 1.0}
print(f"mean pixel: grey {x_test.mean():.4f}, binarized {x_test_bin.mean():.4f}")
# a mean of 784,000 independent Bernoulli draws: its standard error, sqrt(sum x(1 - x)) / n, is below 0.0003
assert abs(x_test_bin.mean() - x_test.mean()) < 0.002

show = np.array([np.flatnonzero(y_test == c)[0] for c in range(10)])  # one test digit of each class
fig, axes = plt.subplots(3, 1, figsize=(7, 3.3), layout="constrained")
image_grid(x_test[show], ncols=10, ax=axes[0], title="grey levels (the data as stored)")
image_grid(x_test_bin[show], ncols=10, ax=axes[1], title="the fixed binarization used for every test ELBO")
image_grid(
    binarize(k_bin_show, x_test[show]), ncols=10, ax=axes[2], title="another binarization (another key)"
)
fig.suptitle("Test digits, grey and binarized")
plt.show()

# %% [markdown]
# The binary digits are noisy versions of the grey ones, along the stroke edges where the grey levels are
# intermediate; two binarizations of the same digit differ only there.
#
# ## 2. An MLP VAE with a 20-dimensional latent
#
# The first model has the shape of the MNIST model of Kingma & Welling (2014): an encoder 784-500-(20 + 20)
# (a mean and a log-variance per latent dimension) and a decoder 20-500-784 giving the logits of 784
# Bernoulli pixels, one hidden layer each. Two choices are modern rather than theirs: **ReLU** activations
# (they used tanh) and **Adam** with step size $10^{-3}$ and batches of 128 (they used Adagrad, with a
# global step size chosen among 0.01, 0.02 and 0.1, batches of 100 and a small weight decay; Adam was
# published a year later). `fit` maximizes the ELBO (sum over pixels and latent dimensions, mean over
# the batch) and evaluates the fixed binary test set after every epoch.
#
# The models of this chapter are **trained briefly**, for a few epochs, so that the chapter runs in a minute
# or two on a laptop CPU. Their numbers are those of unfinished training: all of them would keep improving
# for many more epochs (see the summary).

# %%
EPOCHS_MLP = 15

model20 = vae_lib.mlp_vae(784, 20, hidden=(500,), rngs=nnx.Rngs(k_init20))
t0 = time.perf_counter()
hist20 = vae_lib.fit(
    model20,
    x_train,
    key=k_fit20,
    epochs=EPOCHS_MLP,
    batch_size=128,
    learning_rate=1e-3,
    binarize=True,
    x_test=x_test_bin,
    progress=True,
)
time20 = time.perf_counter() - t0
print(f"{EPOCHS_MLP} epochs in {time20:.1f} s")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
training_curves(hist20, ax=ax, title="MLP VAE, 20-D latent")
curves20 = hist20["train_elbo"] + hist20["test_elbo"]
ax.set_ylim(min(curves20) - 5, max(curves20) + 5)  # every epoch inside the frame
plt.show()
last_gap = hist20["train_elbo"][-1] - hist20["test_elbo"][-1]
rise = hist20["test_elbo"][-1] - hist20["test_elbo"][-4]
print(
    f"last epoch: train ELBO - test ELBO = {last_gap:.1f} nats; test ELBO rose {rise:.1f} over the last 3 epochs"
)
assert abs(last_gap) < 5 and rise > 0.5

# %% [markdown]
# The training ELBO (averaged over each epoch's fresh binarizations, while the weights change) and the
# test ELBO rise together and are still rising (printed: the rise over the last three epochs); after such
# a short run they are within a few nats of each other, and the model is far from overfitting its 4,000
# digits.
#
# The test ELBO, evaluated once more with one sample $z \sim q_\phi(z \mid x)$ per digit (not the
# posterior mean, which would not give an unbiased estimate of the ELBO), and its two terms.
# `vae_lib.elbo_per_example` keeps each digit's value, which gives the standard error.

# %%
k_eval20, k_evalc, k_eval2, k_eval_grey = jax.random.split(k_eval, 4)


@nnx.jit(static_argnames=("num_samples", "likelihood"))
def elbo_terms(model, key, x, num_samples=1, likelihood="bernoulli"):
    """vae_lib.elbo_per_example for a model, compiled: x (N, 784) -> reconstruction, KL, each (N,)."""
    return vae_lib.elbo_per_example(
        key, x, model.encode, model.decode, likelihood=likelihood, num_samples=num_samples
    )


def test_elbo(key, model, x=x_test_bin, num_samples=1):
    """Per-digit ELBO and its two terms on x (N, 784): three (N,) arrays, nats."""
    rec, kl = elbo_terms(model, key, jnp.asarray(x), num_samples=num_samples)
    return np.asarray(rec - kl), np.asarray(rec), np.asarray(kl)


def se(a):
    """Standard error of the mean of per-digit values a (N,)."""
    return float(np.std(a, ddof=1) / math.sqrt(len(a)))


elbo20, rec20, kl20 = test_elbo(k_eval20, model20)
print(
    f"20-D MLP VAE: test ELBO {elbo20.mean():.1f} +- {se(elbo20):.1f} nats = "
    f"reconstruction {rec20.mean():.1f} - KL {kl20.mean():.1f}"
)
assert abs(elbo20.mean() + 119) < 6, "test ELBO of the 20-D MLP VAE out of the expected range"
assert abs(kl20.mean() - 25) < 4

# %% [markdown]
# After this short training the test ELBO is about $-119$ nats per digit, with a standard error of about 1
# over the test digits (`vae_lib.evaluate_elbo` computes the same data-set mean without keeping each
# digit's value). The KL term, about 25 nats, is how much the encoder tells the decoder about each digit;
# the reconstruction term is the log-probability of the 784 binary pixels given that code.
#
# **How loose is the grey-level "ELBO"?** Back to section 1: feed the same model the *grey* test digits
# and compute the Bernoulli "ELBO" anyway, and the ELBO of the continuous-Bernoulli model with the same
# weights (`vae_lib` has that likelihood: `likelihood="continuous_bernoulli"`). With the same draws of $z$,
# their difference is exactly $\mathbb{E}_q\sum_d \log C(\lambda_d)$: what the grey-level number gives away.
# (The cell also checks our `log_cb_normalizer` against the library's.)

# %%
x_grey = jnp.asarray(x_test)  # the grey-level test digits
# the same key gives the same draws of z for both likelihoods: their difference is E_q sum_d log C exactly
rec_bern, kl_g = elbo_terms(model20, k_eval_grey, x_grey, num_samples=4)
rec_cb, _ = elbo_terms(model20, k_eval_grey, x_grey, num_samples=4, likelihood="continuous_bernoulli")
grey_elbo, cb_elbo = np.asarray(rec_bern - kl_g), np.asarray(rec_cb - kl_g)
log_c = cb_elbo - grey_elbo  # (1000,): E_q sum_d log C(lambda_d) for each digit
print(
    f"grey-level Bernoulli 'ELBO' {grey_elbo.mean():.0f} nats; continuous-Bernoulli ELBO {cb_elbo.mean():.0f}; "
    f"difference E_q sum_d log C = {log_c.mean():.0f} +- {se(log_c):.0f} (at least 784 log 2 = {784 * math.log(2):.0f})"
)
eta = 8.0 * jax.random.normal(k_cb, (1000,))  # our log C above against the library's, on random logits
np.testing.assert_allclose(
    log_cb_normalizer(eta), vae_lib.distributions.continuous_bernoulli_log_norm(eta), rtol=1e-5, atol=1e-5
)
assert np.all(log_c >= 784 * math.log(2) - 1e-2)
assert abs(log_c.mean() - 1350) < 300

# %% [markdown]
# For this model the grey-level number lies about 1,350 nats per digit below the continuous-Bernoulli
# ELBO of the same networks (about 1.7 nats per pixel), two and a half times the guaranteed 543: the
# decoder is confident (logits far from 0 on the background), and $C(\lambda)$ grows like $|\text{logit}|$
# there (Exercise 4). (The model was trained on binary digits; one trained on grey levels would give
# another number, but the bound's direction and its 543-nat floor are the same.)
#
# **Reconstructions and samples.** `model.reconstruct(x)` decodes the posterior mean:
# $\mathbb{E}[x \mid z = \mu(x)]$, the pixel probabilities, shown as grey levels. `model.sample(key, n)`
# decodes $z \sim \mathcal{N}(0, I)$ and also shows the pixel probabilities, not binary draws from them.


# %%
def show_reconstructions(model, title):
    """Binary test inputs (top) above their reconstructions (bottom)."""
    fig, axes = plt.subplots(2, 1, figsize=(7, 2.3), layout="constrained")
    image_grid(x_test_bin[show], ncols=10, ax=axes[0], title="binary test digits")
    recon = nnx.jit(lambda m, x: m.reconstruct(x))(model, jnp.asarray(x_test_bin[show]))  # compiled
    image_grid(recon, ncols=10, ax=axes[1], title="reconstructions")
    fig.suptitle(title)
    plt.show()


show_reconstructions(model20, "MLP VAE, 20-D latent")

k_s20, k_sc, k_s2, k_blur = jax.random.split(k_samples, 4)
fig, ax = plt.subplots(figsize=(6, 3))
image_grid(model20.sample(k_s20, 30), ncols=10, ax=ax, title="MLP VAE, 20-D latent: samples, z ~ N(0, I)")
plt.show()

# %% [markdown]
# The reconstructions keep each digit's class and shape but smooth the binarization noise away: the
# decoder gives the probability of each pixel, and the noise of one particular binarization is not
# something a 20-number code can (or should) store. The samples are less convincing than the
# reconstructions: some are clear digits, many are malformed or blurry. Section 7 measures where the
# codes they come from lie.
#
# ## 3. A convolutional VAE
#
# `vae_lib.conv_vae` builds the architecture of the Keras VAE example: two stride-2 3x3 convolutions
# (28 -> 14 -> 7 pixels), a dense layer, and a decoder that mirrors it. Each of the decoder's 2x
# upsampling steps is a **2x2** convolution to four times the channels followed by *depth-to-space* (the
# "sub-pixel convolution" of Shi et al., 2016). Such a step contains every 3x3 stride-2 transposed
# convolution, the Keras example's upsampling, as a special case (7 of its 16 weights per pair of channels
# fixed at zero; the `ConvDecoder` docstring gives the construction and the library's tests check it). That
# is a statement about 3x3 transposed convolutions, not about every kernel size. Convolutions share their
# weights across the image, so the model has far fewer parameters than the MLP, but they cost more
# arithmetic per digit (each weight is applied at every position of the image); how much longer an epoch
# takes depends on the machine, and here also on the smaller batches chosen next (the timings printed
# below). To learn as much as possible from
# 2 epochs we halve the default channels to (16, 32), widen the dense layer from 16 to 64 units (a 16-unit
# layer in front of a 20-D latent learns slowly), and take more, smaller steps (batches of 32, step size
# $2 \times 10^{-3}$).

# %%
CONV_EPOCHS = 2

conv_model = vae_lib.conv_vae(20, channels=(16, 32), hidden=64, rngs=nnx.Rngs(k_initc))
count = lambda m: sum(a.size for a in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
print(f"parameters: MLP VAE {count(model20):,}, convolutional VAE {count(conv_model):,}")
assert abs(count(conv_model) / count(model20) - 0.2) < 0.03  # about a fifth
t0 = time.perf_counter()
hist_conv = vae_lib.fit(
    conv_model,
    x_train,
    key=k_fitc,
    epochs=CONV_EPOCHS,
    batch_size=32,
    learning_rate=2e-3,
    binarize=True,
    progress=True,
)
time_conv = time.perf_counter() - t0
print(f"{CONV_EPOCHS} epochs in {time_conv:.1f} s (first-epoch compilation included, as for the MLP above)")

elbo_c, rec_c, kl_c = test_elbo(k_evalc, conv_model)
diff_c = elbo_c - elbo20
print(
    f"convolutional VAE: test ELBO {elbo_c.mean():.1f} +- {se(elbo_c):.1f} = "
    f"reconstruction {rec_c.mean():.1f} - KL {kl_c.mean():.1f}; "
    f"minus the MLP's: {diff_c.mean():.1f} +- {se(diff_c):.1f} (paired)"
)
assert abs(elbo_c.mean() + 157) < 15, "test ELBO of the convolutional VAE out of the expected range"
assert diff_c.mean() < -10 * se(diff_c), "after 2 epochs the conv VAE should still trail the MLP"
assert abs(diff_c.mean() + 38) < 15  # measured: -38.2 +- 0.6

# %%
show_reconstructions(conv_model, f"Convolutional VAE after {CONV_EPOCHS} epochs")
fig, ax = plt.subplots(figsize=(6, 3))
conv_samples = nnx.jit(lambda m, k: m.sample(k, 30))(conv_model, k_sc)  # compiled: faster than eager convs
image_grid(conv_samples, ncols=10, ax=ax, title="Convolutional VAE: samples, z ~ N(0, I)")
plt.show()

# %% [markdown]
# After 2 epochs the convolutional VAE's test ELBO (about $-157$ nats per digit) is about 38 nats below the
# MLP's after 15, far outside the paired standard error (under 1 nat): a snapshot early in training, not a
# verdict on the architecture. Its reconstructions are blurrier and several change the digit's class; its
# samples are mostly faint blobs, with few recognisable digits yet. On full MNIST and with long training,
# convolutional VAEs are usually at least as good as MLP ones, with a fraction of the parameters (not
# shown here). The rest of this chapter uses MLPs, which train in seconds.
#
# ## 4. A 2-D latent space you can look at
#
# With two latent dimensions the whole code space fits on a page. The model is the MLP of section 2 with
# `latent_dim=2`, trained the same way.

# %%
model2 = vae_lib.mlp_vae(784, 2, hidden=(500,), rngs=nnx.Rngs(k_init2))
hist2 = vae_lib.fit(model2, x_train, key=k_fit2, epochs=EPOCHS_MLP, binarize=True, progress=True)
elbo2, rec2, kl2 = test_elbo(k_eval2, model2)
print(
    f"2-D MLP VAE: test ELBO {elbo2.mean():.1f} +- {se(elbo2):.1f} = reconstruction {rec2.mean():.1f}"
    f" - KL {kl2.mean():.1f}"
)
assert abs(elbo2.mean() + 174.5) < 8, "test ELBO of the 2-D MLP VAE out of the expected range"

mean2, logvar2 = model2.encode(jnp.asarray(x_test_bin))  # (1000, 2) each
m2 = np.asarray(mean2)
BOUND = float(np.ceil(np.quantile(np.abs(m2), 0.995)))  # a square that holds almost every code
outside = np.mean(np.abs(m2).max(axis=1) > BOUND)

fig, axes = plt.subplots(1, 2, figsize=(11, 5))
latent_scatter(mean2, y_test, ax=axes[0], title="Test digits: encoder means, by class", s=6)
decode_mean2 = lambda z: model2.mean_of(model2.decode(jnp.asarray(z)))  # noqa: E731  (G, 2) -> (G, 784)
decoded_manifold(decode_mean2, num_points=17, bound=BOUND, ax=axes[1],
                 title=f"Decoded grid over [-{BOUND:.0f}, {BOUND:.0f}]$^2$ (same axes)")  # fmt: skip
for ax in axes:
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(-BOUND, BOUND)
    ax.set_ylim(-BOUND, BOUND)
plt.show()
print(f"codes span z_1 in [{m2[:, 0].min():.1f}, {m2[:, 0].max():.1f}], z_2 in [{m2[:, 1].min():.1f}, "
      f"{m2[:, 1].max():.1f}]; {outside:.1%} of them lie outside the square of half-width {BOUND:.0f}")  # fmt: skip
assert outside < 0.02

# %% [markdown]
# Left: each test digit's posterior mean $\mu(x)$, coloured by its label, which the VAE never saw. Right:
# the decoder's output at each point of a regular grid over the same square, a map of what the latent
# plane means; neighbouring points decode to similar images, and one digit morphs into another across a
# boundary. The square is chosen to hold almost every code (the fraction outside is printed), so the two
# panels share their axes; the grid's corners, far from any code, decode to whatever the decoder
# extrapolates.
#
# Some classes occupy their own region of the plane, others overlap in a crowded middle: with two numbers
# per digit, the model keeps what matters most for the pixels (overall shape, slant, stroke width), which
# is related to the class but is not the class. One way to put a number on "the classes form regions":
# predict each test digit's label by a vote of its 5 nearest neighbours in the latent plane (excluding
# itself). Chance is 10%.

# %%
dist = ((m2[:, None, :] - m2[None, :, :]) ** 2).sum(axis=-1)  # (1000, 1000) squared distances
np.fill_diagonal(dist, np.inf)
votes = y_test[np.argsort(dist, axis=1)[:, :5]]  # (1000, 5) labels of the 5 nearest neighbours
predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
knn_acc = (predicted == y_test).mean()
per_class = [(predicted == y_test)[y_test == c].mean() for c in range(10)]
print(
    f"5-nearest-neighbour accuracy in the 2-D latent space: {knn_acc:.2f} +- {math.sqrt(knn_acc * (1 - knn_acc) / 1000):.2f}"
)
print("per class:", "  ".join(f"{c}: {a:.2f}" for c, a in enumerate(per_class)))
assert abs(knn_acc - 0.53) < 0.08

# %% [markdown]
# About 53% (chance: 10%), far from perfect, and very different between classes (printed per class above):
# the best-separated classes are the ones with their own region in the scatter.
#
# **The aggregate posterior against the prior.** The ELBO's KL term pulls each digit's
# $q_\phi(z \mid x)$ towards the prior $\mathcal{N}(0, I)$. What the decoder is trained on, though, is the
# *aggregate posterior* $q_\phi(z) = \frac1N \sum_n q_\phi(z \mid x_n)$, the mixture of all digits'
# posteriors, and samples from the prior look like training digits only where $q_\phi(z)$ covers the
# prior. Its mean is the mean of the encoder means; its covariance is the covariance of the means plus the
# average posterior covariance. Below: one draw $z \sim q_\phi(z \mid x)$ per test digit, i.e. 1,000 draws
# from the aggregate posterior of the test set, over the prior's density, and the two marginals (the
# frames hold every draw).

# %%
z_post = np.asarray(
    vae_lib.reparameterize(k_post, mean2, logvar2)
)  # (1000, 2): one z ~ q(z|x) per test digit
post_var = np.asarray(jnp.exp(logvar2))
agg_mean = m2.mean(axis=0)
agg_cov = np.cov(m2, rowvar=False) + np.diag(post_var.mean(axis=0))  # (2, 2)
post_sd = np.sqrt(post_var).mean(axis=0)
for d in range(2):
    print(
        f"z_{d + 1}: aggregate posterior mean {agg_mean[d]:+.2f}, variance {agg_cov[d, d]:.2f} "
        f"(prior: 0 and 1); a digit's posterior standard deviation, on average: {post_sd[d]:.2f}"
    )

lim = float(max(4.0, np.ceil(np.abs(z_post).max())))
fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
density_contours(
    lambda z: vae_lib.standard_normal_log_prob(jnp.asarray(z)),
    xlim=(-lim, lim),
    ylim=(-lim, lim),
    points=z_post,
    ax=axes[0],
    title="z ~ q(z) (white) over the prior's density",
)
axes[0].set_xlabel("$z_1$")
axes[0].set_ylabel("$z_2$")
grid = np.linspace(-lim, lim, 200)
for d in range(2):
    ax = axes[d + 1]
    ax.hist(z_post[:, d], bins=40, range=(-lim, lim), density=True, alpha=0.6, label="q(z), test digits")
    ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k", label="prior N(0, 1)")
    ax.set_xlabel(f"$z_{d + 1}$")
    ax.set_ylabel("density")
    ax.set_title(f"Marginal of $z_{d + 1}$")
    ax.legend(fontsize="small")
plt.show()

kl_moments = 0.5 * (np.trace(agg_cov) + agg_mean @ agg_mean - 2 - np.log(np.linalg.det(agg_cov)))
print(f"KL(N(mean, covariance of q(z)) || N(0, I)) = {kl_moments:.2f} nats")
assert np.all(np.abs(post_sd - 0.15) < 0.06), (
    "each digit's posterior should be narrow compared with the prior"
)
assert abs(kl_moments - 0.9) < 0.5

# %% [markdown]
# Two things stand out.
#
# - **Each digit's posterior is tiny.** Its standard deviation (printed above, about 0.15 in each
#   dimension) is a small fraction of the prior's 1: the encoder pins each digit down to a small patch of
#   the plane, and the aggregate posterior's spread comes almost entirely from the spread of the means.
# - **The aggregate posterior is not the prior.** It is off-centre and stretched in some directions, has
#   dense clusters (the classes) and thin regions between and around them, and puts mass outside the
#   prior's bulk. Its mean and variances printed above differ from $(0, 1)$. A single number:
#   $\mathrm{KL}(\mathcal{N}(m, S) \,\|\, \mathcal{N}(0, I))$, where $\mathcal{N}(m, S)$ is the
#   Gaussian with $q_\phi(z)$'s mean and covariance (printed above, about 0.9). It is a lower bound on
#   $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ itself: among distributions with a given covariance the Gaussian
#   has the largest entropy, and $\mathbb{E}_q[\log p(z)]$ depends on $q$ only through its first two
#   moments. Section 7 estimates $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ directly.
#
# ## 5. Two latent dimensions or twenty?
#
# Same architecture, same data, same training; only the latent dimension differs.

# %%
d_elbo, d_kl = elbo20 - elbo2, kl20 - kl2
print(f"test ELBO, 20-D: {elbo20.mean():.1f}   2-D: {elbo2.mean():.1f}   "
      f"difference {d_elbo.mean():.1f} +- {se(d_elbo):.1f} nats per digit (paired)")  # fmt: skip
print(f"KL term,   20-D: {kl20.mean():.1f}    2-D: {kl2.mean():.1f}    ratio {kl20.mean() / kl2.mean():.1f}")
assert abs(d_elbo.mean() - 55) < 10 and d_elbo.mean() > 20 * se(d_elbo)
d_rec = rec20 - rec2
print(f"reconstruction term gained {d_rec.mean():.1f} nats for {d_kl.mean():.1f} more nats of KL "
      f"(ratio {d_rec.mean() / d_kl.mean():.1f})")  # fmt: skip
assert abs(kl20.mean() / kl2.mean() - 4.6) < 1.5
assert abs(d_rec.mean() / d_kl.mean() - 3.8) < 0.8

k_b2, k_b20, k_s20b = jax.random.split(k_blur, 3)
samples2, samples20 = model2.sample(k_s2, 60), model20.sample(k_s20b, 60)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
image_grid(samples2, ncols=10, ax=axes[0], title="2-D latent: samples")
image_grid(samples20, ncols=10, ax=axes[1], title="20-D latent: samples")
plt.show()

# mean of p(1 - p) over the pixels of 300 samples: 0 for pure black and white, 0.25 for uniform grey
blur = {
    name: float(jnp.mean(s * (1 - s)))
    for name, s in [("2-D", model2.sample(k_b2, 300)), ("20-D", model20.sample(k_b20, 300))]
}
print("greyness of the samples, mean p(1 - p):", {k: round(v, 3) for k, v in blur.items()})
assert abs(blur["2-D"] / blur["20-D"] - 1.8) < 0.4

# %% [markdown]
# The 20-D model's test ELBO is higher by about 55 nats per digit (paired standard error about 1). Its
# encoder also sends the decoder more information: a KL term about 4.6 times the 2-D model's (about 20
# nats more), spent on details that two numbers cannot hold, and paid back almost four times over in the
# reconstruction term (about 75 nats more; printed).
#
# The samples differ as the numbers suggest, and in a way worth seeing. The **2-D** samples are smooth and
# blurry: the pixel probabilities are greyer (their mean $p(1 - p)$ is about 1.8 times the 20-D samples'),
# because two numbers cannot pin down a digit's details, and the decoder outputs the average of the digits
# that share a code. Most look like one of a few prototypes, with blends where classes meet; some are no
# digit at all (grey smudges, broken rings). The **20-D** samples have sharper, more varied strokes, but
# many are not clearly any digit. A higher ELBO is only a higher lower bound; that the 20-D model is the
# better model of the test digits needs $\log p(x)$ itself, which section 8 estimates (about 58 nats
# higher). A better likelihood does not necessarily mean nicer-looking samples; section 7 measures where
# the samples' codes lie.
#
# ## 6. Interpolation
#
# Encode two test digits, walk between their posterior means, and decode each point. First the straight
# line $z(t) = (1 - t)\,\mu_a + t\,\mu_b$, with the 2-D and the 20-D model, between the 0 and the 1 shown
# above; the 2-D path is drawn over the codes of the test digits, so you can see what it crosses.


# %%
def lerp(a, b, ts):
    """Points (1 - t) a + t b for t in ts: (Z,), (Z,), (T,) -> (T, Z)."""
    return (1 - ts[:, None]) * a[None] + ts[:, None] * b[None]


def slerp(a, b, ts):
    """Spherical interpolation (Shoemake, 1985): along the great circle, with the norm interpolated linearly.

    (Z,), (Z,), (T,) -> (T, Z); for |a| = |b| it is the arc between them at constant norm.
    """
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    omega = np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))
    unit = (np.sin((1 - ts)[:, None] * omega) * (a / na) + np.sin(ts[:, None] * omega) * (b / nb)) / np.sin(
        omega
    )
    return unit * ((1 - ts) * na + ts * nb)[:, None]


i_a, i_b = show[0], show[1]  # the "0" and the "1" shown above
ts = np.linspace(0.0, 1.0, 10, dtype=np.float32)
mu2_ab = np.asarray(model2.encode(jnp.asarray(x_test_bin[[i_a, i_b]]))[0])  # (2, 2)
mu20_ab = np.asarray(model20.encode(jnp.asarray(x_test_bin[[i_a, i_b]]))[0])  # (2, 20)
paths = {
    "2-D latent, straight line": (model2, lerp(*mu2_ab, ts)),
    "20-D latent, straight line": (model20, lerp(*mu20_ab, ts)),
    "20-D latent, spherical (slerp)": (model20, slerp(*mu20_ab, ts)),
}

fig = plt.figure(figsize=(13, 4.2), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[1, 2])
ax = left.subplots()
latent_scatter(mean2, y_test, ax=ax, title="2-D codes and the straight path", s=4)
ax.plot(*paths["2-D latent, straight line"][1].T, "k.-", lw=1.5)
axes = right.subplots(3, 1)
for ax, (name, (model, z)) in zip(axes, paths.items(), strict=True):
    image_grid(model.mean_of(model.decode(jnp.asarray(z, jnp.float32))), ncols=10, ax=ax, title=name)
plt.show()

for name, (_, z) in paths.items():
    print(f"{name:<32} norm of z along the path: {np.round(np.linalg.norm(z, axis=1), 1)}")

# %% [markdown]
# In 2-D the straight path from the 0 to the 1 runs across the plane, and wherever it crosses the region
# of another class the decoded image is that class (the scatter shows which regions it crosses). In 20-D
# the path is also straight (a straight line goes around nothing), but the codes of the other classes need
# not lie on it: there is room for them elsewhere. One pair is one example; the cell below measures it over
# 300 random pairs of test digits of different classes, labelling each decoded interior point by its nearest
# training digit in pixel space (Chapter 1's 1-NN labeller) and counting how often it is *neither* end's
# class.

# %%
x_train_bin = binarize(k_bin_train, x_train)  # one fixed binarization, to encode the training digits
sq_train = (x_train**2).sum(1)


def nn_labels(images):
    """Label of the nearest training digit (grey levels, Euclidean), Chapter 1's 1-NN labeller: (n, 784) -> (n,)."""
    images = np.asarray(images, np.float32)
    d2 = sq_train[None, :] - 2.0 * images @ x_train.T  # |x|^2 is the same for every candidate
    return y_train[d2.argmin(axis=1)]


k_pairs, k_prior20 = jax.random.split(k_interp)
pairs = np.asarray(jax.random.choice(k_pairs, 1000, (600, 2)))
pairs = pairs[y_test[pairs[:, 0]] != y_test[pairs[:, 1]]][:300]  # 300 pairs of different classes
t_in = np.linspace(0.0, 1.0, 10, dtype=np.float32)[1:-1]  # the 8 interior points
neither, mid_ratio, per_pairs, cosines = {}, {}, {}, {}
for name, model, path in [("2-D", model2, lerp), ("20-D", model20, lerp), ("20-D slerp", model20, slerp)]:
    mu = np.asarray(model.encode(jnp.asarray(x_test_bin))[0])
    z = np.stack([path(mu[a], mu[b], t_in) for a, b in pairs])  # (300, 8, Z)
    labels = nn_labels(model.mean_of(model.decode(jnp.asarray(z.reshape(-1, z.shape[-1]))))).reshape(300, 8)
    ends = y_test[pairs]  # (300, 2)
    per_pair = ((labels != ends[:, :1]) & (labels != ends[:, 1:])).mean(axis=1)  # (300,)
    neither[name], per_pairs[name] = (per_pair.mean(), se(per_pair)), per_pair
    mid = np.linalg.norm(z[:, 3:5].mean(axis=1), axis=1)  # near the midpoint t = 1/2
    mid_ratio[name] = np.mean(mid / np.linalg.norm(mu[pairs], axis=2).mean(axis=1))
    ua, ub = (mu[pairs[:, i]] / np.linalg.norm(mu[pairs[:, i]], axis=1, keepdims=True) for i in (0, 1))
    cosines[name] = float(np.mean(np.sum(ua * ub, axis=1)))  # mean cos of the angle between the two codes
    print(f"{name:<10}: interior points labelled neither end's digit: {neither[name][0]:.1%} +- "
          f"{neither[name][1]:.1%}; norm near the midpoint / mean norm of the ends: {mid_ratio[name]:.2f}; "
          f"mean cos(angle between the ends) {cosines[name]:+.2f}")  # fmt: skip
d_slerp = per_pairs["20-D slerp"] - per_pairs["20-D"]  # the same 300 pairs: a paired difference
print(f"slerp minus straight line, 20-D: {d_slerp.mean():+.1%} +- {se(d_slerp):.1%} (paired)")
assert neither["2-D"][0] - neither["20-D"][0] > 0.1
assert abs(neither["2-D"][0] - 0.51) < 0.1 and abs(neither["20-D"][0] - 0.13) < 0.06
assert abs(neither["20-D slerp"][0] - neither["20-D"][0]) < 0.05 and mid_ratio["20-D slerp"] > 0.95
assert abs(mid_ratio["2-D"] - 0.83) < 0.1 and abs(mid_ratio["20-D"] - 0.70) < 0.08
assert abs(cosines["2-D"] - 0.39) < 0.15 and abs(cosines["20-D"]) < 0.1
assert abs(d_slerp.mean() - 0.018) < 0.02  # measured: +1.8 +- 0.4 points

# %% [markdown]
# Over 300 pairs, about 51% of the interior points of a 2-D path decode to a third digit, against about
# 13% in 20-D (standard errors about 2 and 1 percentage points): in 2-D the classes must share one plane,
# and a straight line between two of them crosses others; in 20-D it crosses them much less often.
#
# **Why the midpoint shrinks in high dimension.** For two independent draws $a, b \sim \mathcal{N}(0, I_d)$,
# $\|a\|^2 \approx d$, while the midpoint $(a + b)/2 \sim \mathcal{N}(0, \tfrac12 I_d)$ has
# $\|(a + b)/2\|^2 \approx d/2$: its norm is $1/\sqrt2 \approx 0.71$ times theirs. (In general
# $\|(a + b)/2\| = \|a\| \sqrt{(1 + \cos\theta)/2}$ for $\|a\| = \|b\|$ at angle $\theta$.) On average the
# ratio is about the same in any dimension for centred, isotropic draws, since $\mathbb{E}\cos\theta = 0$
# in every dimension; what high dimension adds is *concentration*: independent high-dimensional vectors are
# nearly orthogonal and their norms nearly equal, so almost every midpoint is that short. In 2-D the angle
# and the norm vary so much from draw to draw that the average means little. In 20-D the prior's mass sits
# in a thin shell, $\|z\| \approx \sqrt{20} \approx 4.5$ with a standard deviation of about 0.7, and a norm
# of $0.71 \cdot 4.5 \approx 3.2$ is rare under the prior (next cell): the midpoint of two typical codes is
# an atypical one. The 20-D encoder means behave the same way (the ratio printed above is about 0.70). The
# 2-D model's ratio, about 0.83, is higher for another reason: its codes sit off-centre (section 4), so two
# codes tend to point the same way (the mean cosine of the angle between a pair's codes, printed above, is
# about +0.4 in 2-D and about 0 in 20-D). *Spherical interpolation* (slerp; White,
# 2016, for generative models) walks along the great circle between the two codes with the norm
# interpolated linearly, so the path stays in the shell (ratio about 1.0, printed). For these models it
# changes little in what the path decodes to: the third row of the figure looks like the second, and the
# share of interior points labelled as a third digit is, if anything, slightly *higher* than on the straight
# line, by about 1.8 percentage points (paired standard error 0.4, printed above). The norm
# argument says where a straight path goes, not that this decoder fails there.

# %%
a, b = np.asarray(jax.random.normal(k_prior20, (2, 10_000, 20)))
norm_end, norm_mid = np.linalg.norm(a, axis=1), np.linalg.norm((a + b) / 2, axis=1)
below = np.mean(norm_end < norm_mid.mean())  # share of prior draws with a norm below a typical midpoint's
slerp_mid = np.linalg.norm(slerp(a[0], b[0], np.array([0.5])))
print(f"20-D prior: |z| = {norm_end.mean():.2f} +- {norm_end.std():.2f} (sd); midpoint of two draws: "
      f"{norm_mid.mean():.2f} (ratio {norm_mid.mean() / norm_end.mean():.3f}); "
      f"{below:.1%} of prior draws are shorter than that")  # fmt: skip
print(
    f"slerp midpoint of one pair: {slerp_mid:.2f}, its ends {np.linalg.norm(a[0]):.2f} and {np.linalg.norm(b[0]):.2f}"
)
assert abs(norm_mid.mean() / norm_end.mean() - 1 / math.sqrt(2)) < 0.01
assert below < 0.05 and abs(mid_ratio["20-D"] - 0.71) < 0.08

# %% [markdown]
# ## 7. Does the VAE's code space still have holes?
#
# Chapter 1 defined a **hole** in a code space: a point farther from every training code than 99% of the
# test digits' codes are from their nearest training code (its `hole_fraction`, now
# `vae_lib.diagnostics.hole_fraction`); and it labelled a decoded image by its nearest training digit in
# pixel space, so that the **label mix** of decoded samples shows which digits a sampler produces. It
# measured both for an autoencoder's codes (Chapter 1, Exercise 3). Here are the same two numbers for the
# VAEs, with the codes $\mu(x)$ of the training digits (one fixed binarization) and of the test digits, and
# 1,000 draws $z \sim p(z) = \mathcal{N}(0, I)$, the way a VAE generates. As a reference, the hole fraction
# of one draw $z \sim q_\phi(z \mid x)$ per test digit: samples of the aggregate posterior, which should
# sit among the codes.

# %%
holes, mixes = {}, {}
for name, model, kk in zip(["2-D", "20-D"], [model2, model20], jax.random.split(k_holes), strict=True):
    k_prior_holes, k_agg_holes = jax.random.split(kk)
    z_train_codes = np.asarray(model.encode(jnp.asarray(x_train_bin))[0])  # (4000, Z) codes mu(x)
    mu_test, logvar_test = model.encode(jnp.asarray(x_test_bin))
    z_prior = np.asarray(jax.random.normal(k_prior_holes, (1000, model.latent_dim)))
    z_agg = np.asarray(vae_lib.reparameterize(k_agg_holes, mu_test, logvar_test))
    holes[name] = {
        "prior": hole_fraction(z_prior, z_train_codes, np.asarray(mu_test)),
        "aggregate posterior": hole_fraction(z_agg, z_train_codes, np.asarray(mu_test)),
    }
    labels = nn_labels(model.mean_of(model.decode(jnp.asarray(z_prior))))
    mixes[name] = np.bincount(labels, minlength=10) / len(labels)
    for source, h in holes[name].items():
        print(f"{name}: hole fraction of {source} samples: {h:.1%} +- {math.sqrt(h * (1 - h) / 1000):.1%}")
    print(f"{name}: label mix of decoded prior samples (digits 0-9): {np.round(mixes[name], 2)}")
    print(f"      largest share {mixes[name].max():.0%}, digits under 5%: {int(np.sum(mixes[name] < 0.05))}")

# %%
assert abs(holes["2-D"]["prior"] - 0.375) < 0.1 and abs(holes["2-D"]["aggregate posterior"] - 0.025) < 0.02
assert abs(holes["20-D"]["prior"] - 0.44) < 0.1 and abs(holes["20-D"]["aggregate posterior"] - 0.04) < 0.03
assert abs(mixes["2-D"][0] + mixes["2-D"][1] - 0.66) < 0.15 and np.sum(mixes["2-D"] < 0.05) >= 3
assert abs(mixes["20-D"].max() - 0.15) < 0.05 and np.sum(mixes["20-D"] < 0.05) == 0

# %% [markdown]
# *(Numbers from this run; the asserts keep them in bands.)*
#
# - **2-D.** About 38% of the prior samples fall in holes, against about 2.5% of the aggregate posterior's
#   own samples. The codes do not cover the prior: they sit off-centre (section 4), and where the prior
#   puts mass on the other side there are no codes. The label mix is lopsided: zeros and ones make up about
#   two thirds of the decoded prior samples, and four digits get under 5% each (sevens almost never).
# - **20-D.** About 44% of the prior samples fall in holes, against about 4% of the aggregate posterior's
#   samples: nearly half the codes a sampler feeds the decoder are unlike any code it was trained on. The
#   label mix, by contrast, is close to the data's 10% per digit (largest share about 15%, none under 5%):
#   the nearest training
#   digit of a decoded sample can be any digit, even when the sample itself is a poor one (compare the
#   samples of section 5).
#
# Chapter 1's 2-D autoencoder, sampled the same way (its Exercise 3), put more of its prior samples in
# holes, about 69% against the 2-D VAE's 38%, because its codes were never pulled towards
# $\mathcal{N}(0, I)$ at all (their standard deviations were about 4 to 5); its label mix was about as
# lopsided (30% zeros, five digits under 5%). So the KL term helps. But the VAE's holes are not closed.
#
# **What the KL term does, and what it does not.** Averaged over the training digits, the KL term of the
# ELBO splits exactly into two parts (Hoffman & Johnson, 2016; Chapter 2 derives it):
#
# $$
# \mathbb{E}_x\,\mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)
# = I_q(x; z) + \mathrm{KL}\big(q_\phi(z) \,\|\, p(z)\big),
# $$
#
# where $I_q(x; z)$ is the mutual information between a digit and its code under $q(x, z) = q(x)\,q_\phi(z
# \mid x)$ with $q(x)$ uniform on the $N$ training digits, and $q_\phi(z)$ is the aggregate posterior. Only
# the second part measures how far the codes are from filling the prior. The ELBO charges both at the same
# rate, and the first is information the decoder needs to reconstruct, so the optimum trades them off and
# nothing forces $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ to zero. Moreover $I_q(x; z) \le \log N$ (a code cannot
# carry more information than which of the $N$ digits it came from), so
# $\mathrm{KL}(q_\phi(z) \,\|\, p(z)) \ge \mathbb{E}_x \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z)) - \log N$: once
# the KL term exceeds $\log N$, the aggregate posterior *must* move away from the prior. `elbo_surgery`
# estimates both parts on the training codes (one draw of $z$ per digit; $\log q_\phi(z)$ is the exact
# mixture over all 4,000 posteriors).

# %%
LOG_N = math.log(len(x_train))
surgery, kl_moment_matched = {}, {}
for name, model, kk in zip(["2-D", "20-D"], [model2, model20], jax.random.split(k_surgery), strict=True):
    mean_tr, logvar_tr = model.encode(jnp.asarray(x_train_bin))  # (4000, Z) each
    s = elbo_surgery(kk, mean_tr, logvar_tr, num_samples=1)
    m, v = np.asarray(mean_tr, np.float64), np.exp(np.asarray(logvar_tr, np.float64))
    cov_agg = np.atleast_2d(np.cov(m, rowvar=False)) + np.diag(v.mean(axis=0))  # q(z)'s covariance
    mu_agg = m.mean(axis=0)
    kl_gauss = 0.5 * (np.trace(cov_agg) + mu_agg @ mu_agg - len(mu_agg) - np.linalg.slogdet(cov_agg)[1])
    surgery[name], kl_moment_matched[name] = s, kl_gauss
    print(f"{name}: E_x KL(q(z|x) || p(z)) = {float(s.kl):.2f} = I(x; z) {float(s.mutual_information):.2f} "
          f"+- {float(s.mutual_information_se):.2f} + KL(q(z) || p(z)) {float(s.marginal_kl):.2f} "
          f"+- {float(s.marginal_kl_se):.2f} nats   (log N = {LOG_N:.2f})")  # fmt: skip
    print(f"      moment-matched Gaussian's KL(N(mean, cov of q(z)) || p(z)) = {kl_gauss:.2f}, a lower bound")
    assert float(s.marginal_kl) > kl_gauss - 3 * float(s.marginal_kl_se)  # section 4's inequality
    total = float(s.mutual_information + s.marginal_kl)
    assert abs(total - float(s.kl)) < 4 * float(s.mutual_information_se + s.marginal_kl_se) + 0.05
    assert float(s.mutual_information) <= LOG_N + 1e-4
s2, s20 = surgery["2-D"], surgery["20-D"]
assert float(s20.marginal_kl) > float(s20.kl) - LOG_N - 0.5  # forced by I <= log N
assert float(s20.marginal_kl) > 10 * float(s2.marginal_kl)
assert abs(float(s2.mutual_information) - 4.2) < 0.8 and abs(float(s2.marginal_kl) - 1.3) < 0.6
assert abs(float(s20.mutual_information) - 8.2) < 0.1 and abs(float(s20.marginal_kl) - 17.3) < 4
assert abs(kl_moment_matched["20-D"] - 1.5) < 1.0

# %% [markdown]
# - **2-D**: the KL term, about 5.5 nats per digit, is mostly mutual information (about 4.2 nats); the
#   aggregate posterior is about 1.3 nats from the prior. That is small next to the KL term, and still
#   compatible with more than a third of the prior samples in holes, because $\mathrm{KL}(q \,\|\, p)$ barely
#   charges $q$ for leaving parts of $p$ empty: if $q$ were the prior restricted to a region holding a
#   fraction $m$ of its mass, $\mathrm{KL}(q \,\|\, p) = \log(1/m)$, only 0.5 nats for $m = 0.6$.
# - **20-D**: the KL term is about 25 nats, but a code can carry at most $\log 4000 \approx 8.3$ nats about
#   which training digit it came from. The mutual information is at that ceiling (about 8.2), and the rest,
#   about 17 nats, is $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$: in 20 dimensions the aggregate posterior is far
#   from the prior. (The ceiling binds because each training digit's posterior barely overlaps any other's;
#   on a larger training set it would lie higher.) The moment-matched Gaussian's KL, the lower bound of
#   section 4, is only about 1.5 nats here: the aggregate posterior has roughly the prior's first two
#   moments and is still far from it.
#
# So the KL term is not a hole-filler. It charges every nat of information a code carries, and it pulls
# each $q_\phi(z \mid x)$ *towards* the prior; it does not make the aggregate posterior *equal* to the
# prior, and here it left about 40% of prior samples in holes in both models. (Remedies change the prior
# or the sampler, for example a prior fitted to $q_\phi(z)$; not this chapter's subject.)
#
# ## 8. How far is the ELBO from $\log p(x)$?
#
# The ELBO is a lower bound. The importance-sampled estimate
# $\text{IWAE}_k = \log \frac1k \sum_{s=1}^k p_\theta(x, z_s) / q_\phi(z_s \mid x)$ with $z_s \sim
# q_\phi(z \mid x)$ (Burda, Grosse & Salakhutdinov, 2016) is a tighter bound in expectation and, when the
# weights $p_\theta(x, z) / q_\phi(z \mid x)$ are bounded, approaches
# $\log p(x)$ as $k$ grows. `vae_lib.importance_log_likelihood` computes it. Burda et al. report MNIST
# log-likelihoods with $k = 5000$; $k = 1000$ is also common. We compute both for the 20-D model on all
# 1,000 test digits: five independent runs with $k = 1000$, whose log-mean-exp is exactly the $k = 5000$
# estimate (the average of 5,000 importance weights per digit). For the 2-D model the exact $\log p(x)$ is
# a 2-D integral, computed by quadrature as in Chapter 3 (Exercise 2 sets importance sampling against it).
#
# How to read the differences: $\log p(x) - \text{ELBO}(x) = \mathrm{KL}(q_\phi(z \mid x) \,\|\,
# p_\theta(z \mid x))$ for each digit, and $\mathbb{E}[\text{IWAE}_k] \le \log p(x)$, so the mean of
# $\text{IWAE}_k - \text{ELBO}$ is a **lower bound** on the mean $\mathrm{KL}(q_\phi(z \mid x) \,\|\,
# p_\theta(z \mid x))$, not an estimate of it. The exact $\log p(x)$ of the 2-D model gives the gap itself.

# %%
t0 = time.perf_counter()
k_el2, k_el20, *k_iw20 = jax.random.split(k_iwae, 7)
x_eval = jnp.asarray(x_test_bin)

# 2-D: ELBO (20 samples of z per digit) and the exact log p(x) by quadrature (250 x 250 grid)
elbo2_s = test_elbo(k_el2, model2, num_samples=20)[0]
logp2 = np.asarray(vae_lib.quadrature_log_likelihood(model2, x_eval, num_points=250))
logp2_coarse = np.asarray(vae_lib.quadrature_log_likelihood(model2, x_eval[:200], num_points=175))
quad_change = np.abs(logp2[:200] - logp2_coarse)  # the convergence check, on the first 200 digits

# 20-D: ELBO (20 samples), five independent IWAE_1000 runs -> IWAE_1000 (the first) and IWAE_5000
elbo20_s = test_elbo(k_el20, model20, num_samples=20)[0]
runs = np.stack(
    [np.asarray(vae_lib.importance_log_likelihood(k, model20, x_eval, num_samples=1000)) for k in k_iw20]
)  # (5, 1000)
iw20_1000 = runs[0]
iw20_5000 = np.asarray(vae_lib.log_mean_exp(jnp.asarray(runs), axis=0))  # = log of the mean of 5000 weights


def row(name, values, ref=None):
    diff = "" if ref is None else f"{(values - ref).mean():+8.2f} +- {se(values - ref):.2f}"
    print(f"{name:<34}{values.mean():>9.2f} +- {se(values):.2f}   {diff}")


print(f"{'nats per digit, 1,000 test digits':<34}{'mean':>9}{'':9}{'minus the ELBO (paired)':>26}")
row("2-D  ELBO (20 samples of z)", elbo2_s)
row("2-D  log p(x), quadrature 250^2", logp2, elbo2_s)
row("20-D ELBO (20 samples of z)", elbo20_s)
row("20-D IWAE, k = 1000", iw20_1000, elbo20_s)
row("20-D IWAE, k = 5000", iw20_5000, elbo20_s)
d_k = iw20_5000 - iw20_1000
d_models = iw20_5000 - logp2  # the same digits: a paired difference
print(
    f"\n20-D: IWAE_5000 - IWAE_1000 = {d_k.mean():.3f} +- {se(d_k):.3f} ({d_k.mean() / se(d_k):.0f} standard "
    f"errors); standard deviation of the five IWAE_1000 means: {runs.mean(axis=1).std(ddof=1):.3f}"
)
print(f"20-D IWAE_5000 minus 2-D exact log p(x): {d_models.mean():.1f} +- {se(d_models):.1f} (paired)")
print(
    f"2-D quadrature, change from 175 to 250 points per axis (first 200 digits): mean {quad_change.mean():.1e}, "
    f"largest {quad_change.max():.1e} nats ({time.perf_counter() - t0:.0f} s)"
)

# %%
assert quad_change.mean() < 0.005 and quad_change.max() < 0.1  # the quadrature has converged
gap2 = logp2 - elbo2_s
assert abs(gap2.mean() - 3.8) < 1.2 and gap2.mean() > 10 * se(gap2)
assert abs((iw20_1000 - elbo20_s).mean() - 6.0) < 1.5
assert abs(d_k.mean() - 0.35) < 0.2 and 6 < d_k.mean() / se(d_k) < 25  # measured: 0.35, about 12 SE
assert abs(d_models.mean() - 58) < 10 and d_models.mean() > 20 * se(d_models)
assert abs(runs.mean(axis=1).std(ddof=1) - 0.03) < 0.03  # Monte Carlo spread of the IWAE_1000 mean

# %% [markdown]
# What the table says (values of this run; the asserts keep them in bands):
#
# - **2-D, exact.** The mean gap $\log p(x) - \text{ELBO}$, i.e. the mean
#   $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$, is about 3.8 nats per digit, much larger than
#   on Chapter 3's 2-D points. The quadrature has converged to well under 0.01 nats on average (the
#   largest change of one digit's value between the two grids is printed).
# - **20-D.** $\text{IWAE}_{1000}$ lies about 6 nats above the ELBO, so the mean
#   $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$ is *at least* about 6 nats. Going to Burda et
#   al.'s $k = 5000$ adds about 0.35 nats, about twelve paired standard errors: the estimate is not
#   converged in $k$, and the remaining distance to $\log p(x)$ is unknown. Exercise 2 shows, on the 2-D
#   model, how far below the exact value importance sampling can stay at $k = 1000$.
# - **Digits and digits of precision.** Every number is a mean over all 1,000 test digits, with a standard
#   error of about 1 nat over digits (1.6 for the 2-D model), so two *models* evaluated on these digits
#   differ meaningfully only by more than a few nats, unless the comparison is paired, as the differences
#   here are. The Monte Carlo error of the $k = 1000$ mean itself is small: the five runs' means have a
#   standard deviation of about 0.03 nats. The 20-D model's $\log p(x)$ estimate is about 58 nats above the
#   2-D model's exact value (paired standard error about 1, printed): here the ELBOs and the likelihoods
#   rank the two models the same way.
#
# ## Summary
#
# - A Bernoulli decoder models **binary** pixels. On grey levels its "ELBO" is a valid lower bound on the
#   log-density of the continuous-Bernoulli model with the same networks, but at least $784 \log 2 \approx
#   543$ nats too low (about 1,350 for our 20-D model). Train with dynamic binarization and evaluate on one
#   fixed binarization of the test set.
# - The 20-D MLP VAE (Kingma & Welling's shape, with ReLU and Adam instead of their tanh and Adagrad)
#   reaches a test ELBO of about $-119 \pm 1$ nats per digit after 15 short epochs on 4,000 digits; a
#   convolutional VAE has about a fifth of the parameters but needs more arithmetic per digit, and after
#   2 epochs it trails by about 38 nats.
# - A 2-D latent space can be looked at: classes form regions (5-NN accuracy about 53%), and the aggregate
#   posterior differs visibly from the prior. A 20-D latent gives an ELBO about 55 nats higher.
# - Straight-line interpolation in 2-D crosses other classes (about half the interior points decode to a
#   third digit, 13% in 20-D); in 20-D the midpoint of two codes has about 0.7 times their norm, an
#   atypical code under the prior; slerp keeps the norm.
# - Holes, with Chapter 1's metrics: about 38% of 2-D and 44% of 20-D prior samples fall in holes (a few
#   percent of aggregate-posterior samples do). The average KL term equals
#   $I(x; z) + \mathrm{KL}(q(z) \,\|\, p(z))$;
#   it pulls codes towards the prior but does not make the aggregate posterior equal to it: about 1.3 nats
#   apart in 2-D, about 17 in 20-D, where the KL term exceeds $\log N$.
# - $\log p(x) - \text{ELBO}$: about 3.8 nats for the 2-D model (exact); at least about 6 for the 20-D
#   model ($\text{IWAE}$ with $k = 1000$; $k = 5000$ adds about 0.35), on all 1,000 test digits.
# - What longer training would change: every model here is far from converged (the test ELBO curve is
#   still rising). With many more epochs the ELBOs keep rising, the samples become cleaner, and on full
#   MNIST (60,000 digits, `vae_lib.data.load_mnist`) the train and test ELBOs would eventually separate
#   as the model starts to overfit. These are expectations from the literature, not measured here.
#
# ## Exercises
#
# ### Exercise 1: thresholding instead of sampling
#
# Some papers binarize MNIST by thresholding at 0.5 instead of sampling. Evaluate the 20-D model's test
# ELBO on `load_mnist5k(binarize_with="threshold").x_test`. Is the number comparable with the one above?
# Why does it come out higher?

# %% [markdown]
# <details><summary>Solution</summary>
#
# A threshold keeps, for each pixel, the more probable of its two values, and the model, trained to predict
# pixel probabilities close to the grey levels, gives that value the higher probability. The thresholded
# digits have no binarization noise at the stroke edges and are easier to predict, so the ELBO comes out
# higher, by about 9 nats per digit here (paired standard error printed by the cell). The two numbers
# describe different data sets and cannot be compared: a log-likelihood on MNIST means nothing unless the
# binarization is stated.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 1: try it yourself first, then run this cell.
x_test_thr = load_mnist5k(binarize_with="threshold").x_test
elbo_thr = test_elbo(k_ex1, model20, x_test_thr)[0]
d_thr = elbo_thr - elbo20
print(f"20-D model, test ELBO: stochastic binarization {elbo20.mean():.1f}, threshold {elbo_thr.mean():.1f}; "
      f"difference {d_thr.mean():.1f} +- {se(d_thr):.1f} (paired)")  # fmt: skip
assert abs(d_thr.mean() - 9) < 4 and d_thr.mean() > 5 * se(d_thr)

# %% [markdown]
# ### Exercise 2: the importance-weighted bound against the exact $\log p(x)$
#
# For the 2-D model, whose exact $\log p(x)$ section 8 computed by quadrature (`logp2`), estimate
# $\mathbb{E}[\text{IWAE}_k]$ on the first 100 test digits for $k = 1, 10, 100, 1000$ and compare each with
# the exact values on the same digits. (Hint: draw 1,000 log weights per digit with
# `vae_lib.log_importance_weights`; the log-mean-exp of each block of $k$ of them is one $\text{IWAE}_k$,
# and averaging over the blocks estimates its expectation.) What do you expect, and what does $k = 1$
# correspond to?

# %% [markdown]
# <details><summary>Solution</summary>
#
# With $k = 1$ the estimate is $\log p_\theta(x, z) - \log q_\phi(z \mid x)$ for one $z \sim q_\phi(z \mid x)$,
# whose expectation is the ELBO (with a Monte Carlo KL rather than the analytic one). Burda et al. (2016)
# show that the expected bound never decreases with $k$ and, when the weights $p(x, z)/q(z \mid x)$ are
# bounded, tends to $\log p(x)$. On these 100 digits the cell finds the mean shortfall
# $\log p(x) - \text{IWAE}_k$ falling from about 4 nats at $k = 1$ to about 0.7 (standard error 0.2) at
# $k = 1000$: even a thousand samples leave about 0.7 nats on the table, and most of that comes from a
# minority of digits: the 20% of digits with a shortfall above 1 nat hold about 90% of the total at
# $k = 1000$ (printed). A shortfall that
# shrinks this slowly is what one expects when the true posterior has mass where the Gaussian $q$ rarely
# samples (a second mode, say): such a region needs very many proposals to be weighed.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 2: try it yourself first, then run this cell.
x_100, exact_100 = x_eval[:100], logp2[:100]
# 1,000 log importance weights per digit, in 10 draws of 100; IWAE_k is the log-mean-exp of a block of k
log_weights = nnx.jit(
    lambda model, key, x: vae_lib.log_importance_weights(key, x, model.encode, model.decode, num_samples=100)
)
log_w = jnp.concatenate([log_weights(model2, kk, x_100) for kk in jax.random.split(k_ex2, 10)])  # (1000, 100)
shortfall = {}
for k in (1, 10, 100, 1000):
    iwae_k = vae_lib.log_mean_exp(log_w.reshape(1000 // k, k, 100), axis=1).mean(axis=0)  # mean over blocks
    shortfall[k] = exact_100 - np.asarray(iwae_k)
    d = shortfall[k]
    print(
        f"k = {k:>4}: log p(x) - IWAE_k = {d.mean():.2f} +- {se(d):.2f} nats; digits above 1 nat: {np.mean(d > 1):.0%}"
    )
means = [d.mean() for d in shortfall.values()]
assert all(np.diff(means) < 0)  # the shortfall shrinks as k grows
big = shortfall[1000] > 1.0
share_big = shortfall[1000][big].sum() / shortfall[1000].sum()
print(f"k = 1000: the {big.mean():.0%} of digits above 1 nat hold {share_big:.0%} of the total shortfall")
assert abs(means[-1] - 0.74) < 0.4 and means[-1] > 3 * se(shortfall[1000])  # not zero at k = 1000
assert abs(big.mean() - 0.2) < 0.1 and abs(share_big - 0.89) < 0.1  # a minority of digits holds most of it

# %% [markdown]
# ### Exercise 3: which latent dimensions does the 20-D model use?
#
# The KL term is a sum over latent dimensions. Compute its average over the test digits per dimension
# (hint: `vae_lib.kl_standard_normal` sums over the last axis, so give it arrays of shape `(N, 20, 1)`; or
# use `vae_lib.diagnostics.kl_per_dimension`), check that the 20 numbers add up to the KL term of the
# ELBO, and count the dimensions that carry information. A dimension with an average KL near 0 is
# *inactive*: its posterior equals the prior for every digit and the decoder ignores it (Chapter 3's
# posterior collapse, one dimension at a time).

# %% [markdown]
# <details><summary>Solution</summary>
#
# All 20 dimensions are in use after this short training (the smallest carries about 0.8 nats per digit,
# and all 20 are *active* by Burda et al.'s criterion, `vae_lib.diagnostics.active_units`), so nothing has
# collapsed yet. With longer training, or with more latent dimensions than the data need, some usually
# become inactive.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 3: try it yourself first, then run this cell.
mean20, logvar20 = model20.encode(x_eval)  # (1000, 20) each
kl_dims = np.asarray(vae_lib.kl_standard_normal(mean20[..., None], logvar20[..., None]).mean(axis=0))  # (20,)
np.testing.assert_allclose(
    kl_dims, np.asarray(kl_per_dimension(mean20, logvar20)), rtol=1e-5
)  # the library agrees
print("average KL per latent dimension (nats):", np.round(kl_dims, 2))
np.testing.assert_allclose(kl_dims.sum(), kl20.mean(), rtol=1e-4)  # the analytic KL: no sampling
n_active, activity = active_units(mean20)  # Burda et al.'s criterion: Var_x E_q[z_j | x] > 0.01
print(f"active units: {n_active} of 20 (smallest activity {float(activity.min()):.2f})")
assert abs(kl_dims.min() - 0.8) < 0.4 and n_active == 20

# %% [markdown]
# ### Exercise 4: the continuous-Bernoulli constant
#
# Show that $C(\lambda) = 2\operatorname{artanh}(1 - 2\lambda)/(1 - 2\lambda) \ge 2$ for every
# $\lambda \in (0, 1)$, with equality only at $\lambda = \tfrac12$, and that in terms of the logit
# $\eta = \log\frac{\lambda}{1 - \lambda}$ it is $C = \eta / \tanh(\eta/2)$, which grows like $|\eta|$. Why
# does that make the grey-level bound of section 2 much looser than $784 \log 2$ for a confident decoder?

# %% [markdown]
# <details><summary>Solution</summary>
#
# Write $u = 1 - 2\lambda \in (-1, 1)$. Then $\operatorname{artanh}(u)/u = \sum_{n \ge 0} u^{2n}/(2n + 1) \ge
# 1$, with equality only at $u = 0$, so $C \ge 2$. With $\lambda = \sigma(\eta)$: $1 - 2\lambda =
# -\tanh(\eta/2)$ and $\operatorname{artanh}(1 - 2\lambda) = \tfrac12 \log\frac{1-\lambda}{\lambda} =
# -\eta/2$, so $C = \eta / \tanh(\eta/2)$; as $|\eta| \to \infty$, $\tanh(\eta/2) \to \pm 1$ and
# $C \approx |\eta|$. Section 2 measured about 1,350 nats over 784 pixels, an average $\log C$ of about 1.7
# nats per pixel instead of the $\log 2 \approx 0.69$ of an undecided pixel: a typical (geometric-mean)
# $C$ of $e^{1.7} \approx 5.5$, which by $C \approx |\eta|$ means logits of magnitude around 5 to 6. A decoder
# that is sure most background pixels are off is exactly such a confident decoder; the more confident, the
# looser the bound.
#
# </details>
#
# ## References
#
# - D. P. Kingma and M. Welling (2014). *Auto-Encoding Variational Bayes.* ICLR. arXiv:1312.6114. (Their
#   MNIST models: one hidden layer of 500 tanh units, Adagrad, batches of 100.)
# - D. P. Kingma and J. Ba (2015). *Adam: A Method for Stochastic Optimization.* ICLR. arXiv:1412.6980.
# - D. J. Rezende, S. Mohamed and D. Wierstra (2014). *Stochastic Backpropagation and Approximate
#   Inference in Deep Generative Models.* ICML. arXiv:1401.4082.
# - D. P. Kingma and M. Welling (2019). *An Introduction to Variational Autoencoders.* Foundations and
#   Trends in Machine Learning 12(4). arXiv:1906.02691.
# - Y. Burda, R. Grosse and R. Salakhutdinov (2016). *Importance Weighted Autoencoders.* ICLR.
#   arXiv:1509.00519. ($k = 5000$ for the reported log-likelihoods; the active-units criterion.)
# - M. D. Hoffman and M. J. Johnson (2016). *ELBO surgery: yet another way to carve up the variational
#   evidence lower bound.* NIPS Workshop on Advances in Approximate Bayesian Inference.
# - R. Salakhutdinov and I. Murray (2008). *On the Quantitative Analysis of Deep Belief Networks.* ICML.
#   (The stochastically binarized MNIST.)
# - G. Loaiza-Ganem and J. P. Cunningham (2019). *The continuous Bernoulli: fixing a pervasive error in
#   variational autoencoders.* NeurIPS. arXiv:1907.06845.
# - W. Shi et al. (2016). *Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
#   Convolutional Neural Network.* CVPR. arXiv:1609.05158. (Depth-to-space upsampling.)
# - K. Shoemake (1985). *Animating rotation with quaternion curves.* SIGGRAPH (slerp); T. White (2016).
#   *Sampling Generative Networks.* arXiv:1609.04468 (slerp for latent spaces).

# %%
print(
    f"python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}"
)
print(f"chapter ran in {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
      f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
