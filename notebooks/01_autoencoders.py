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
# # Chapter 1 — Autoencoders, and why they are not yet generative models
#
# **What you will learn**
#
# - What a (deterministic) autoencoder is: an encoder $f_\phi$, a decoder $g_\theta$, a bottleneck and a
#   reconstruction loss.
# - How to build one with Flax NNX (`nnx.Linear` layers) and train it with Optax and a jitted step.
# - What it learns on a 2-D toy (a 1-D curve through the data) and on MNIST digits (a 2-D map of the digits).
# - Why its code space has *holes*, measured rather than asserted with two metrics (the **hole fraction**
#   and the **label mix** of decoded random codes), and why you cannot generate new data by decoding
#   random codes. This is the motivation for the variational autoencoder (VAE) of the next chapters.
#
# **Prerequisites**: Python and NumPy; the idea of a neural network trained by gradient descent; a first
# look at JAX (`jax.numpy`, `jax.random` keys, `jax.jit`). No probability beyond the mean and variance is
# needed, except in the preview of Section 5, whose terms Chapter 2 defines.
#
# **Where this fits.** Chapter 2 builds the theory of the VAE (the generative model, the ELBO, the
# reparameterization trick) and writes one from scratch; Chapter 3 trains a VAE on the 2-D toy data of the
# Chinese article the course grew out of (see the References); Chapter 4 trains VAEs on MNIST digits and
# measures their code space with this chapter's two metrics.

# %%
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

import vae_lib
from vae_lib.data import load_mnist5k, toy_2d
from vae_lib.diagnostics import hole_fraction
from vae_lib.plotting import image_grid, latent_scatter

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()
key = jax.random.key(0)  # the chapter's one seed; every random draw below uses a key split from it

# %% [markdown]
# ## 1. The autoencoder
#
# An autoencoder is two functions trained together:
#
# - an **encoder** $f_\phi : \mathbb{R}^D \to \mathbb{R}^Z$ that maps a data point $x$ to a *code*
#   $z = f_\phi(x)$, and
# - a **decoder** $g_\theta : \mathbb{R}^Z \to \mathbb{R}^D$ that maps the code back to a
#   *reconstruction* $\hat x = g_\theta(z)$.
#
# With a **bottleneck** $Z < D$ the pair cannot simply copy its input; it has to find a low-dimensional
# description of the data that keeps what matters for reconstructing them. Both are trained to make the
# reconstruction close to the input, here by minimizing the squared error, **summed over the $D$ data
# dimensions and averaged over a batch** of $B$ examples:
#
# $$
# \mathcal{L}(\theta, \phi) = \frac{1}{B} \sum_{b=1}^{B} \big\lVert x_b - g_\theta(f_\phi(x_b)) \big\rVert^2 .
# $$
#
# Everything here is **deterministic**: the same $x$ always gives the same $z$ and the same $\hat x$. There
# is no probability distribution anywhere, neither over the codes nor over the data. Keep that in mind;
# it is where the VAE will differ.
#
# We write both maps as small multi-layer perceptrons with Flax NNX. `MLP` stacks `nnx.Linear` layers with
# a GELU activation between them and none after the last, so a code or an output can be any real number.
# For images in $[0, 1]$ the decoder ends with a sigmoid.


# %%
class MLP(nnx.Module):
    """Linear layers with a GELU between them: (N, sizes[0]) -> (N, sizes[-1])."""

    def __init__(self, sizes, *, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = jax.nn.gelu(layer(h))
        return self.layers[-1](h)  # no activation on the output


class Autoencoder(nnx.Module):
    """x (N, D) -> code z (N, Z) -> reconstruction (N, D)."""

    def __init__(self, data_dim, code_dim, hidden, *, images=False, rngs: nnx.Rngs):
        self.encoder = MLP([data_dim, *hidden, code_dim], rngs=rngs)
        self.decoder = MLP([code_dim, *reversed(hidden), data_dim], rngs=rngs)
        self.images = images  # True: squash the output into [0, 1] with a sigmoid

    def encode(self, x):
        return self.encoder(x)  # (N, D) -> (N, Z)

    def decode(self, z):
        out = self.decoder(z)  # (N, Z) -> (N, D)
        return jax.nn.sigmoid(out) if self.images else out

    def __call__(self, x):
        return self.decode(self.encode(x))


def reconstruction_loss(model, x):
    """Squared error summed over the data dimensions, mean over the batch."""
    return jnp.mean(jnp.sum((model(x) - x) ** 2, axis=-1))


# %% [markdown]
# Training is ordinary minibatch gradient descent with Adam. `train_step` is compiled once by `nnx.jit`; it
# computes the loss and its gradient with respect to every `nnx.Param` of the model and lets the
# `nnx.Optimizer` apply the Adam update to the model in place. (`graph=False` selects NNX's faster "tree
# mode", which is fine for a model without shared layers.) The loop shuffles the data with a fresh key each
# epoch.


# %%
@nnx.jit(graph=False)
def train_step(model, optimizer, x):
    loss, grads = nnx.value_and_grad(reconstruction_loss)(model, x)
    optimizer.update(model, grads)
    return loss


def train(model, x, *, key, epochs, batch_size, learning_rate, progress=True):
    """Train in place; return the mean training loss of each epoch."""
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    x = jnp.asarray(x)
    num_batches = x.shape[0] // batch_size  # the last partial batch is dropped
    history = []
    epochs_iter = range(epochs)
    if progress:
        epochs_iter = tqdm(epochs_iter, desc="epochs", mininterval=2, ncols=100, file=sys.stderr)
    for _ in epochs_iter:
        key, key_perm = jax.random.split(key)
        perm = jax.random.permutation(key_perm, x.shape[0])[: num_batches * batch_size]
        losses = [train_step(model, optimizer, x[idx]) for idx in perm.reshape(num_batches, batch_size)]
        history.append(float(jnp.mean(jnp.stack(losses))))
    return history


def nearest(a, b):
    """Euclidean distance from each row of a (N, D) to its nearest row of b (M, D), and that row's index."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T  # (N, M)
    idx = d2.argmin(axis=1)
    return np.sqrt(np.maximum(d2[np.arange(len(a)), idx], 0.0)), idx


# %% [markdown]
# ## 2. A 2-D toy: a curve through the data
#
# The smallest interesting case: points in the plane ($D = 2$) squeezed through a one-number code
# ($Z = 1$). Whatever the encoder does, the decoder can only output points on the **curve**
# $\{g_\theta(z) : z \in \mathbb{R}\}$, so training bends that curve through the data. We use the "two moons"
# of `vae_lib.data.toy_2d` (2,000 points; Chapter 3 uses the article's own 2-D data).

# %%
key, key_init, key_train = jax.random.split(key, 3)
x_toy = toy_2d("two_moons", 2000, seed=0)  # (2000, 2) float32
toy_ae = Autoencoder(2, 1, (64, 64), rngs=nnx.Rngs(key_init))
toy_history = train(toy_ae, x_toy, key=key_train, epochs=60, batch_size=100, learning_rate=3e-3)
toy_var = float(x_toy.var(axis=0).sum())  # the loss of always answering the mean
toy_explained = 1.0 - toy_history[-1] / toy_var
print(
    f"toy autoencoder: loss {toy_history[0]:.3f} after the first epoch, {toy_history[-1]:.4f} after the last"
)
print(f"total variance of the data {toy_var:.3f}: the curve explains {toy_explained:.1%} of it")

# %%
z_toy = np.asarray(toy_ae.encode(x_toy))[:, 0]  # (2000,) one number per point
x_toy_rec = np.asarray(toy_ae(x_toy))
rec_err = np.linalg.norm(x_toy - x_toy_rec, axis=1)

# Decode a fine grid of codes over the range the data use, and ask how far each decoded point is from
# the nearest data point. "Far" = farther than 99% of the data points are from their own reconstruction.
t = np.linspace(z_toy.min(), z_toy.max(), 500, dtype=np.float32)
curve = np.asarray(toy_ae.decode(t[:, None]))  # (500, 2)
curve_dist, _ = nearest(curve, x_toy)
far_radius = np.quantile(rec_err, 0.99)
off_data = curve_dist > far_radius
frac_off = off_data.mean()
# Which data points have codes in the off-data stretch of the interval?
in_gap = np.interp(z_toy, t, off_data.astype(float)) > 0.5
print(f"99% of reconstructions lie within {far_radius:.3f} of their input")
print(f"fraction of the code interval [{t[0]:.2f}, {t[-1]:.2f}] that decodes off the data: {frac_off:.1%}")
print(f"data points whose code falls in that stretch: {in_gap.sum()} of {len(in_gap)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
ax = axes[0]
ax.scatter(x_toy[:, 0], x_toy[:, 1], s=3, alpha=0.3, color="tab:blue", label="data")
for i in range(0, len(x_toy), 25):
    ax.plot([x_toy[i, 0], x_toy_rec[i, 0]], [x_toy[i, 1], x_toy_rec[i, 1]], color="k", lw=0.5)
ax.plot(curve[:, 0], curve[:, 1], color="tab:red", lw=2, label=r"decoder curve $g_\theta(z)$")
ax.plot(
    np.where(off_data, curve[:, 0], np.nan),
    np.where(off_data, curve[:, 1], np.nan),
    color="orange",
    lw=4,
    label="decodes off the data",
)
ax.set_aspect("equal")
ax.set_xlabel("$x_1$")
ax.set_ylabel("$x_2$")
ax.set_title("2-D data through a 1-D bottleneck (black: x to its reconstruction)")
ax.legend(loc="lower left", fontsize="small")
ax = axes[1]
ax.hist(z_toy, bins=80, color="tab:blue")
for lo, hi in zip(t[:-1][off_data[:-1]], t[1:][off_data[:-1]], strict=True):
    ax.axvspan(lo, hi, color="orange", alpha=0.4, lw=0)
ax.set_xlabel("code $z = f_\\phi(x)$")
ax.set_ylabel("number of data points")
ax.set_title("Codes of the data (orange: codes that decode off the data)")
fig.tight_layout()
plt.show()

# %%
assert 0.98 < toy_explained < 0.999, toy_explained  # measured: 99.4%
assert 0.005 < frac_off < 0.08, frac_off  # measured: 2.2%
assert in_gap.sum() <= 10, in_gap.sum()  # measured: 1 of 2,000: the off-data stretch is a hole

# %% [markdown]
# The decoder has learned a single curve that runs along the upper moon, **jumps across empty space**, and
# runs along the lower moon (the orange stretch). Each point is reconstructed as a point on that curve, and the reconstruction error is small: by the
# last epoch's training loss, the curve explains ≈ 99.4% of the variance of the data. Now look at the codes on the right. The data use two intervals of the code line, and only one
# data point in 2,000 has its code in the stretch between them. The decoder stretches that
# short gap, ≈ 2% of the code interval, across the whole bridge: a small step in code makes a large jump
# in the output. Nothing constrains the decoder there, because no training code falls there.
#
# That gap is the first example of a **hole** in the code space. If we wanted to *generate* new points by
# picking random codes in the interval and decoding them, some of them would land on the bridge between
# the moons, where there are no data.

# %% [markdown]
# ## 3. MNIST digits through a 2-D code
#
# Now real data: 4,000 MNIST digits ($D = 784$ pixels in $[0, 1]$; `vae_lib.data.load_mnist5k` ships them
# offline, with 1,000 more for testing) and a 2-D code, so we can look at the code space directly.

# %%
# NBVAL_CHECK_OUTPUT
mnist = load_mnist5k()
x_train, y_train, x_test, y_test = mnist
print("train", x_train.shape, x_train.dtype, "test", x_test.shape, "labels", np.bincount(y_train))

# %%
key, key_init, key_train = jax.random.split(key, 3)
ae2 = Autoencoder(784, 2, (256, 32), images=True, rngs=nnx.Rngs(key_init))
ae2_history = train(ae2, x_train, key=key_train, epochs=20, batch_size=100, learning_rate=1e-3)

z_train2 = np.asarray(ae2.encode(x_train))  # (4000, 2)
z_test2 = np.asarray(ae2.encode(x_test))  # (1000, 2)
rec_test2 = np.asarray(ae2(x_test))  # (1000, 784)
sse2 = np.sum((rec_test2 - x_test) ** 2, axis=1)  # (1000,) squared error of each test digit
print(
    f"training loss {ae2_history[0]:.1f} -> {ae2_history[-1]:.1f}; "
    f"test squared error {sse2.mean():.1f} +- {sse2.std() / np.sqrt(len(sse2)):.1f} per digit"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.1]})
latent_scatter(z_train2, y_train, ax=axes[0], title="Codes of the 4,000 training digits")
axes[0].set_xlabel("$z_1$")
axes[0].set_ylabel("$z_2$")
image_grid(
    np.concatenate([x_test[:10], rec_test2[:10]]),
    ncols=10,
    ax=axes[1],
    title="Test digits (top) and their reconstructions (bottom)",
)
fig.tight_layout()
plt.show()

# %% [markdown]
# The encoder has sorted the digits: each class occupies its own region, some well separated, others
# overlapping. The reconstructions are blurry, and some are a different digit: two numbers cannot hold
# everything about a digit. (Section 4 measures how often.)
#
# The code space is an odd shape, though: long arms, dense blobs, and wide empty regions between them. If we
# want to *generate* digits, which codes should we decode? Nothing in the autoencoder tells us; it has no
# distribution over codes. The natural guesses are "anywhere in the region the codes occupy" (a uniform
# draw from their bounding box) or "a Gaussian with the codes' mean and covariance". We measure how much of
# each falls in the holes with the **hole fraction**: a point is **in a hole** when it is farther from every
# training code than 99% of the *test* digits' codes are, and the hole fraction of a set of codes is the
# share of them that are in a hole.
#
# `vae_lib.diagnostics.hole_fraction(z_samples, z_train, z_test)` computes exactly this; the cell below also
# computes it by hand with `nearest` for the box samples, and checks that the two agree.


# %%
def random_codes(key, z_train, n):
    """n codes uniform in the bounding box of z_train, and n from a Gaussian fitted to z_train."""
    key_box, key_gauss = jax.random.split(key)
    lo, hi = z_train.min(axis=0), z_train.max(axis=0)
    box = jax.random.uniform(key_box, (n, z_train.shape[1]), minval=lo, maxval=hi)
    gauss = jax.random.multivariate_normal(key_gauss, z_train.mean(axis=0), np.cov(z_train.T), (n,))
    return np.asarray(box, np.float32), np.asarray(gauss, np.float32)


def binomial_se(p, n=1000):
    """Standard error of a share p measured on n independent draws."""
    return float(np.sqrt(p * (1.0 - p) / n))


key, key_codes2 = jax.random.split(key)
box2, gauss2 = random_codes(key_codes2, z_train2, 1000)
holes_box2 = hole_fraction(box2, z_train2, z_test2)
holes_gauss2 = hole_fraction(gauss2, z_train2, z_test2)
# The same number by hand: the radius is the 99th percentile of the test codes' nearest-neighbour distances.
radius2 = np.quantile(nearest(z_test2, z_train2)[0], 0.99)
assert abs(holes_box2 - np.mean(nearest(box2, z_train2)[0] > radius2)) <= 0.001  # at most one sample apart
print(
    f"hole fraction: {holes_box2:.1%} +- {binomial_se(holes_box2):.1%} of the box samples, "
    f"{holes_gauss2:.1%} +- {binomial_se(holes_gauss2):.1%} of the fitted-Gaussian samples (1,000 each)"
)

# %% [markdown]
# What do those random codes decode to? To label a decoded image without training a classifier we give it
# the label of its nearest training digit in pixel space (a 1-nearest-neighbour classifier, "1-NN"). On the
# real test digits it is right ≈ 94% of the time. The **label mix** of a set of decoded codes is the share
# of each digit among their 1-NN labels; for the data it is 10% for each digit.

# %%
dist_test, idx_test = nearest(x_test, x_train)
knn_accuracy = np.mean(y_train[idx_test] == y_test)
decoded_box2 = np.asarray(ae2.decode(box2))  # (1000, 784)
box2_labels = y_train[nearest(decoded_box2, x_train)[1]]
box2_mix = np.bincount(box2_labels, minlength=10) / len(box2_labels)
print(f"1-NN accuracy on the test digits: {knn_accuracy:.3f}")
print("label mix of the decoded box samples (digits 0-9):", np.round(box2_mix, 3))
print(f"digits below 5%: {np.sum(box2_mix < 0.05)}; below 0.5%: {np.sum(box2_mix < 0.005)}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
latent_scatter(z_train2, y_train, ax=axes[0], s=2, title="Training codes (colours) and 40 box samples (x)")
axes[0].scatter(box2[:40, 0], box2[:40, 1], marker="x", color="k", s=25)
axes[0].set_xlabel("$z_1$")
axes[0].set_ylabel("$z_2$")
image_grid(decoded_box2[:40], ncols=10, ax=axes[1], title="The 40 box samples, decoded")
fig.tight_layout()
plt.show()

# %%
assert 0.92 < knn_accuracy < 0.96, knn_accuracy  # measured: 93.8%
assert 0.4 < holes_box2 < 0.7, holes_box2  # measured: 56%
assert 0.08 < holes_gauss2 < 0.35, holes_gauss2  # measured: 20%
top_two = np.sort(box2_mix)[-2:]
assert np.all((0.2 < top_two) & (top_two < 0.4)), box2_mix  # measured: 29% and 30%
assert np.sum(box2_mix < 0.05) >= 4 and np.sum(box2_mix < 0.005) >= 1, box2_mix  # measured: 6 and 2 digits

# %% [markdown]
# Two things to see.
#
# - **Holes.** The hole fraction of the bounding box is ≈ 56% (± 1.6%, the binomial standard error of
#   1,000 draws): more than half of the box is farther from every training code than 99% of the test
#   digits' codes are. Even the Gaussian fitted to the codes puts ≈ 20% of its samples in such holes.
#   (This is one training run; Section 4 repeats it with two more seeds.)
# - **No distribution.** With only two code dimensions the decoder is a smooth sheet of images and
#   usually still draws *something* digit-like in the holes: it extrapolates the nearest cluster, so far
#   from the codes it draws exaggerated versions of a few digits, with blurred blends in between. But the
#   label mix is wrong: two digits, 1 and 3, make up ≈ 30% of the box samples each, and six digits less than
#   5% each (two of them, 2 and 4, under 0.5%), while the data hold 10% of each. The area a class happens to occupy in code
#   space is an accident of training, not a probability.
#
# ## 4. More code dimensions, deeper holes
#
# A 2-D code is good for pictures but loses a lot (the blurry reconstructions). Give the autoencoder a
# 16-D code and it reconstructs much better. But a 16-D box is vast and the codes fill almost none of it.

# %%
key, key_init, key_train, key_codes16 = jax.random.split(key, 4)
ae16 = Autoencoder(784, 16, (256, 32), images=True, rngs=nnx.Rngs(key_init))
ae16_history = train(ae16, x_train, key=key_train, epochs=20, batch_size=100, learning_rate=1e-3)

z_train16 = np.asarray(ae16.encode(x_train))
z_test16 = np.asarray(ae16.encode(x_test))
rec_test16 = np.asarray(ae16(x_test))
sse16 = np.sum((rec_test16 - x_test) ** 2, axis=1)  # (1000,)
box16, gauss16 = random_codes(key_codes16, z_train16, 1000)
holes_box16 = hole_fraction(box16, z_train16, z_test16)
holes_gauss16 = hole_fraction(gauss16, z_train16, z_test16)
# The change in squared error, paired over the same 1,000 test digits, with its standard error.
sse_drop = 1.0 - sse16.mean() / sse2.mean()
d_sse = sse2 - sse16
print(
    f"test squared error per digit: {sse16.mean():.1f} with a 16-D code, {sse2.mean():.1f} with a 2-D code "
    f"(a drop of {sse_drop:.0%}; paired difference {d_sse.mean():.1f} +- {d_sse.std() / np.sqrt(1000):.1f})"
)
# Does a reconstruction still show the right digit? Label it with its nearest training digit (1-NN).
same_digit2 = np.mean(y_train[nearest(rec_test2, x_train)[1]] == y_test)
same_digit16 = np.mean(y_train[nearest(rec_test16, x_train)[1]] == y_test)
print(
    f"reconstructions labelled as the right digit: {same_digit16:.1%} +- {binomial_se(same_digit16):.1%} "
    f"with a 16-D code, {same_digit2:.1%} +- {binomial_se(same_digit2):.1%} with 2-D"
)
print(
    f"hole fraction: {holes_box16:.1%} of the box samples, {holes_gauss16:.1%} of the fitted-Gaussian samples"
)

# %% [markdown]
# Are the decoded samples digits? A decoded image that looks like a digit should be about as close to some
# training digit as the decoder's reconstructions of real test digits are. We compare each decoded sample's
# distance to its nearest training digit with the same distance for the reconstructions, and count the
# samples that are farther than 90% of the reconstructions.

# %%
dist_rec16 = nearest(rec_test16, x_train)[0]
limit = np.quantile(dist_rec16, 0.90)
decoded_box16 = np.asarray(ae16.decode(box16))
decoded_gauss16 = np.asarray(ae16.decode(gauss16))
beyond_box16 = np.mean(nearest(decoded_box16, x_train)[0] > limit)
beyond_gauss16 = np.mean(nearest(decoded_gauss16, x_train)[0] > limit)
print(
    f"farther from every training digit than 90% of reconstructions: "
    f"{beyond_box16:.1%} of decoded box samples, {beyond_gauss16:.1%} of decoded Gaussian samples"
)

fig, axes = plt.subplots(1, 2, figsize=(11, 2.6))
image_grid(decoded_box16[:30], ncols=10, ax=axes[0], title="16-D code: box samples, decoded")
image_grid(decoded_gauss16[:30], ncols=10, ax=axes[1], title="16-D code: fitted-Gaussian samples, decoded")
fig.tight_layout()
plt.show()

# %%
assert 0.45 < sse_drop < 0.65, sse_drop  # measured: 55%
assert 0.5 < same_digit2 < 0.68 and 0.8 < same_digit16 < 0.93, (same_digit2, same_digit16)  # 58%, 87%
assert holes_box16 > 0.98, holes_box16  # measured: 100%
assert 0.2 < holes_gauss16 < 0.4, holes_gauss16  # measured: 30%
assert beyond_box16 > 0.75, beyond_box16  # measured: 86%
assert 0.3 < beyond_gauss16 < 0.5, beyond_gauss16  # measured: 40%

# %% [markdown]
# With 16 code dimensions the reconstructions improve a lot: the squared error per test digit falls by
# ≈ 55% (from ≈ 36 to ≈ 16), and the 1-NN labeller recognises the right digit in ≈ 87% of the
# reconstructions, against ≈ 58% with a 2-D code and ≈ 94% for the test digits themselves. But **every**
# box sample (1,000 of 1,000) lies in a hole, and ≈ 86% of them decode to blobs and scribbles that are
# farther from every real digit than 90% of the reconstructions are. The fitted Gaussian does better only
# because it stays near the centre of the codes. Still, ≈ 30% of its samples fall in holes and ≈ 40%
# decode to images no better than the worst tenth of the reconstructions: smudges, half-digits, blends of
# two classes.
#
# ### One run or a pattern? Two more seeds
#
# Every number so far comes from one training run. The cell below trains both autoencoders twice more, with
# fresh keys for the initialization, the shuffling and the random codes, and recomputes the headline numbers.


# %%
def headline(ae, key_codes):
    """The section's headline numbers for one trained autoencoder."""
    z_tr, z_te = np.asarray(ae.encode(x_train)), np.asarray(ae.encode(x_test))
    rec = np.asarray(ae(x_test))
    box, gauss = random_codes(key_codes, z_tr, 1000)
    return {
        "test squared error": float(np.mean(np.sum((rec - x_test) ** 2, axis=1))),
        "right digit": float(np.mean(y_train[nearest(rec, x_train)[1]] == y_test)),
        "hole fraction, box": hole_fraction(box, z_tr, z_te),
        "hole fraction, Gaussian": hole_fraction(gauss, z_tr, z_te),
    }


runs = {2: [headline(ae2, key_codes2)], 16: [headline(ae16, key_codes16)]}
for _ in range(2):
    for z_dim in (2, 16):
        key, key_init, key_train, key_codes = jax.random.split(key, 4)
        ae = Autoencoder(784, z_dim, (256, 32), images=True, rngs=nnx.Rngs(key_init))
        train(ae, x_train, key=key_train, epochs=20, batch_size=100, learning_rate=1e-3, progress=False)
        runs[z_dim].append(headline(ae, key_codes))

for z_dim, rs in runs.items():
    for name in rs[0]:
        vals = np.array([r[name] for r in rs])
        fmt = "{:6.1f}" if name == "test squared error" else "{:6.1%}"
        print(
            f"{z_dim:2d}-D code, {name:>24}: "
            + "  ".join(fmt.format(v) for v in vals)
            + f"   mean {fmt.format(vals.mean())} +- {fmt.format(vals.std(ddof=1) / np.sqrt(len(vals)))}"
        )

# %%
seed_runs = {z: {name: np.array([r[name] for r in rs]) for name in rs[0]} for z, rs in runs.items()}
# The pattern holds in every run: 16-D reconstructs better, yet its box is all holes; on average over the
# three runs its Gaussian samples fall in holes more often than the 2-D model's.
assert np.all(seed_runs[16]["test squared error"] < 0.6 * seed_runs[2]["test squared error"])
assert np.all(seed_runs[16]["right digit"] > seed_runs[2]["right digit"] + 0.15)
assert np.all(seed_runs[16]["hole fraction, box"] > 0.98)
assert seed_runs[16]["hole fraction, Gaussian"].mean() > seed_runs[2]["hole fraction, Gaussian"].mean()
# Bands around the measured ranges the text quotes.
assert np.all((0.3 < seed_runs[2]["hole fraction, box"]) & (seed_runs[2]["hole fraction, box"] < 0.7))
assert np.all((0.4 < seed_runs[2]["right digit"]) & (seed_runs[2]["right digit"] < 0.68))
assert np.all((14.5 < seed_runs[16]["test squared error"]) & (seed_runs[16]["test squared error"] < 18.0))
assert np.all((0.83 < seed_runs[16]["right digit"]) & (seed_runs[16]["right digit"] < 0.92))
assert np.all(
    (0.2 < seed_runs[16]["hole fraction, Gaussian"]) & (seed_runs[16]["hole fraction, Gaussian"] < 0.45)
)

# %% [markdown]
# The 2-D model's numbers move from seed to seed, since the shape of a 2-D code space depends on the run:
# the hole fraction of its box ranges over ≈ 39–56% and its right-digit share over ≈ 50–58% (our first run
# had the best right-digit share and the largest box hole fraction of the three). The 16-D model's numbers stay within a few points: squared error ≈ 16.0–16.5,
# right digit ≈ 87–88%, and ≈ 29–34% of the fitted Gaussian's samples in holes. The pattern is the same
# in all three runs: the 16-D code reconstructs better and recognisably, its bounding box is all holes,
# and even a Gaussian fitted to its codes puts a sizeable share of its samples in holes.
#
# The autoencoder has learned to *compress*: an encoder and a decoder that agree on the codes of the
# training data. It has not learned a *distribution*. The decoder is only trained at the codes it is given,
# and nothing makes the codes fill a region we know how to sample from.
#
# ## 5. Why we want a VAE
#
# What would make decoding random codes work?
#
# 1. **A prior to sample from.** Fix a distribution over codes in advance, the **prior** $p(z)$ (in a VAE
#    $p(z) = \mathcal{N}(0, I)$), and train so that the codes of the data are pulled towards it. Then "draw
#    $z \sim p(z)$ and decode" is a generator, and the question "which codes?" has an answer.
# 2. **A smooth, probabilistic encoder.** Instead of one point $f_\phi(x)$, let the encoder output a small
#    *distribution* $q_\phi(z \mid x) = \mathcal{N}(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x))$
#    and train the decoder on codes drawn from it. The decoder then has to reconstruct $x$ from a whole
#    neighbourhood of codes, not from one point. A penalty $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$ pulls
#    each neighbourhood towards the prior: its centre towards 0 and its spread towards 1 in every direction.
# 3. **A probabilistic decoder and one objective.** Make the decoder a distribution $p_\theta(x \mid z)$
#    too. The generative model $p(z)\,p_\theta(x \mid z)$ then gives every $x$ a likelihood
#    $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$. Training maximizes a lower bound on
#    $\log p_\theta(x)$ (the ELBO), which turns out to be exactly "reconstruction minus the KL penalty" of
#    points 1 and 2.
#
# **What the KL penalty does not promise.** It does not guarantee that the codes of the data fill the
# prior, so it does not by itself remove the holes. Averaged over the data, the penalty splits exactly into
# two parts (Chapter 2, Section 4 derives it):
#
# $$
# \mathbb{E}_{x}\big[\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))\big]
# = I_q(x; z) + \mathrm{KL}\big(q_\phi(z) \,\|\, p(z)\big),
# \qquad q_\phi(z) = \mathbb{E}_{x}\big[q_\phi(z \mid x)\big],
# $$
#
# where $q_\phi(z)$, the **aggregate posterior**, is the distribution of the codes of the whole data set,
# and $I_q(x; z)$ is the mutual information between a data point and its code, the information the code
# carries about $x$. Only the second term measures how far the codes are from covering the prior. The
# penalty weighs both together, and the first is information that reconstruction needs; the ELBO trades
# the two against the reconstruction term, and nothing forces $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ to zero.
# So a VAE's code space can still have holes: regions where the prior puts mass but few codes of data
# fall. Whether it has, and how many, is a question to measure, not to assume. Chapter 4 measures the code
# space of VAEs trained on these digits with this chapter's two metrics: the hole fraction of prior samples
# and the 1-NN label mix of the decoded prior samples.
#
# ### The article's FAQ: "What is the difference between a VAE and an autoencoder?"
#
# The article answers that a VAE "uses variational inference to learn a generative model of the data",
# while an autoencoder learns a representation by "minimizing the difference between the encoder and the
# decoder". The second half is wrong and the first half is too vague to help. A corrected answer:
#
# - **An autoencoder** is a pair of deterministic functions, $z = f_\phi(x)$ and $\hat x = g_\theta(z)$,
#   trained to minimize a **reconstruction error** between the input $x$ and its reconstruction $\hat x$
#   (not a "difference between the encoder and the decoder": those two map between different spaces and
#   are never compared). It defines no probability distribution, has no prior over codes and no
#   likelihood, and gives no principled way to generate new data (Sections 3 and 4).
# - **A VAE** is a latent-variable **generative model**, a prior $p(z)$ times a decoder distribution
#   $p_\theta(x \mid z)$. It is trained by maximizing the evidence lower bound (ELBO) on $\log p_\theta(x)$,
#   with an **encoder** $q_\phi(z \mid x)$ that outputs a distribution over codes and approximates the
#   intractable posterior $p_\theta(z \mid x)$. Its loss is a reconstruction term (an expected negative
#   log-likelihood) **plus** $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$. To generate, draw $z \sim p(z)$
#   and decode; the encoder is not needed.
# - The architectures look alike (encoder, bottleneck, decoder), and a VAE whose encoder variance is
#   forced to zero and whose KL term is dropped *is* an autoencoder (with a Gaussian decoder of fixed
#   variance, its reconstruction term is then the squared error, up to constants). The difference lies in
#   the probabilistic model and the objective, not in the network.

# %% [markdown]
# ## Summary
#
# - An autoencoder compresses: encoder $f_\phi$ to a low-dimensional code, decoder $g_\theta$ back,
#   trained on the reconstruction error (here the squared error summed over dimensions, averaged over the
#   batch). In Flax NNX it is two stacks of `nnx.Linear` layers, trained by a jitted step with an
#   `nnx.Optimizer` holding an Optax transformation.
# - On a 2-D toy with a 1-D code the decoder learns a curve through the data. A stretch of the code interval
#   that (almost) no data point uses decodes to a bridge across empty space.
# - On MNIST the codes form clusters with wide empty regions between them. Two metrics measure this: the
#   **hole fraction** (the share of random codes farther from every training code than 99% of the test
#   codes are) and the **label mix** of decoded random codes (the share of each digit by a 1-NN labeller).
#   In 2-D, decoded random codes are mostly digit-like but in the wrong proportions. In 16-D the whole box
#   and ≈ 30% of a fitted Gaussian's samples lie in holes, and most decoded box samples are not digits.
#   Three training runs show the same pattern.
# - The missing pieces are a prior $p(z)$ that the codes are pulled towards, and an encoder that outputs a
#   distribution so the decoder learns whole neighbourhoods. Together they make the VAE of Chapter 2. Its
#   KL penalty pulls the codes towards the prior without forcing them to cover it; Chapter 4 measures what
#   is left.
#
# ## Exercises
#
# ### Exercise 1: a linear autoencoder is PCA
#
# Remove the activations: encoder $z = A x + a$ and decoder $\hat x = W z + b$, with $Z = 1$, on 2-D data.
# Train it on correlated Gaussian data and compare the decoder direction $W$ with the first principal
# component, and the loss with the smallest eigenvalue of the data covariance. Why must they agree?

# %% [markdown]
# <details><summary>Solution</summary>
#
# The best rank-1 reconstruction of centred data in squared error is the projection onto the top principal
# direction (Eckart–Young), and its error per point is the variance left in the other directions, the
# smallest eigenvalue $\lambda_2$ here. A linear autoencoder can represent exactly the rank-1 affine maps, so
# its optimum is that projection: $W$ spans the top eigenvector (up to sign and scale, since $z$ can be
# rescaled freely) and the loss tends to $\lambda_2$. The cell below finds $|\cos(W, \text{PC}_1)| = 1.0000$
# and a loss of 0.1929 against $\lambda_2 = 0.1929$. (With nonlinearities, or without the bottleneck, this
# equivalence breaks.)
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 1: try it yourself first, then run this cell.
class LinearAutoencoder(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.encoder = nnx.Linear(2, 1, rngs=rngs)
        self.decoder = nnx.Linear(1, 2, rngs=rngs)

    def __call__(self, x):
        return self.decoder(self.encoder(x))


key, key_data, key_init, key_train = jax.random.split(key, 4)
cov = np.array([[2.0, 1.2], [1.2, 1.0]], np.float32)
x_lin = np.asarray(jax.random.multivariate_normal(key_data, jnp.array([1.0, -1.0]), cov, (2000,)), np.float32)
lin_ae = LinearAutoencoder(rngs=nnx.Rngs(key_init))
lin_history = train(lin_ae, x_lin, key=key_train, epochs=100, batch_size=200, learning_rate=3e-2)

eigvals, eigvecs = np.linalg.eigh(np.cov(x_lin.T, bias=True))  # ascending eigenvalues
w = np.asarray(lin_ae.decoder.kernel[...])[0]  # (2,) the decoder direction
cosine = abs(w @ eigvecs[:, 1]) / np.linalg.norm(w)
final_loss = float(reconstruction_loss(lin_ae, jnp.asarray(x_lin)))
print(f"|cos(decoder direction, first principal component)| = {cosine:.4f}")
print(f"loss {final_loss:.4f} vs smallest eigenvalue {eigvals[0]:.4f}")
assert cosine > 0.999 and abs(final_loss - eigvals[0]) < 0.02 * eigvals[0]

# %% [markdown]
# ### Exercise 2: interpolation
#
# Take the 2-D MNIST autoencoder, encode a test "1" and a test "0", and decode ten codes on the straight
# segment between them. What happens in the middle? How far are the codes on the segment from the nearest
# training code?

# %% [markdown]
# <details><summary>Solution</summary>
#
# The segment from the "1" arm to the "0" blob crosses the middle of the code space. The decoded images
# change from a one into a zero by way of other digits or blurred blends. The middle codes are far from
# every training code (the cell below finds ≈ 1.6 at the farthest point, against 0.63 for the 99th
# percentile of the test codes' distances): a hole, the same thing as the bridge between the two moons in
# Section 2.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 2: try it yourself first, then run this cell.
one, zero = x_test[y_test == 1][:1], x_test[y_test == 0][:1]
z_one, z_zero = np.asarray(ae2.encode(one)), np.asarray(ae2.encode(zero))
alphas = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
z_path = (1 - alphas) * z_one + alphas * z_zero  # (10, 2)
path_dist = nearest(z_path, z_train2)[0]
typical = np.quantile(nearest(z_test2, z_train2)[0], 0.99)
print("distance of each code on the path to its nearest training code:", np.round(path_dist, 2))
print(f"(99% of test codes are within {typical:.2f} of a training code)")

fig, ax = plt.subplots(figsize=(8, 1.3))
image_grid(np.asarray(ae2.decode(z_path)), ncols=10, ax=ax, title="Decoding the segment from a 1 to a 0")
plt.show()
assert path_dist.max() > 1.5 * typical, (path_dist.max(), typical)

# %% [markdown]
# ### Exercise 3: sampling the autoencoder as if it were a VAE
#
# A VAE generates by decoding $z \sim \mathcal{N}(0, I)$. Do that with the 2-D autoencoder. What is the
# hole fraction of 1,000 such draws, and what is their label mix? These are the two numbers Chapter 4
# measures for a VAE.

# %% [markdown]
# <details><summary>Solution</summary>
#
# The autoencoder's codes have an arbitrary location and scale: they were never asked to look like
# $\mathcal{N}(0, I)$, and here their standard deviation is ≈ 4.8 and ≈ 4.3 in the two coordinates.
# Standard-normal draws cover only a patch of the code space near the origin, and the cell below finds a
# hole fraction of ≈ 69% and a lopsided label mix: ≈ 30% zeros, and five digits (1, 2, 3, 4 and 8) under
# 5% each. A VAE's KL penalty pulls the codes towards $\mathcal{N}(0, I)$, so there these draws are the
# natural way to sample; how well its codes then cover the prior is what Chapter 4 measures.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 3: try it yourself first, then run this cell.
key, key_prior = jax.random.split(key)
z_prior = np.asarray(jax.random.normal(key_prior, (1000, 2)))
holes_prior = hole_fraction(z_prior, z_train2, z_test2)
prior_labels = y_train[nearest(np.asarray(ae2.decode(z_prior)), x_train)[1]]
prior_mix = np.bincount(prior_labels, minlength=10) / len(prior_labels)
print(f"the codes' spread (standard deviation of each coordinate): {np.round(z_train2.std(axis=0), 2)}")
print(f"hole fraction of N(0, I) draws: {holes_prior:.1%} +- {binomial_se(holes_prior):.1%}")
print("label mix of the decoded N(0, I) draws (digits 0-9):", np.round(prior_mix, 2))
assert 3.0 < z_train2.std(axis=0).min() and z_train2.std(axis=0).max() < 7.0
assert 0.55 < holes_prior < 0.8 and np.sum(prior_mix < 0.05) >= 3, (holes_prior, prior_mix)

# %% [markdown]
# ## References
#
# - An untitled Chinese-language article on variational autoencoders, the text this course grew out of
#   (sections: background, core concepts, algorithm and mathematical model, a TensorFlow code example,
#   future trends and challenges, FAQ). The course keeps its topics and its 2-D toy data, and corrects its
#   formulas and code where they are wrong (here: its FAQ answer in Section 5).
# - D. P. Kingma and M. Welling. *Auto-Encoding Variational Bayes.* ICLR 2014. arXiv:1312.6114.
# - D. J. Rezende, S. Mohamed and D. Wierstra. *Stochastic Backpropagation and Approximate Inference in
#   Deep Generative Models.* ICML 2014. arXiv:1401.4082.
# - D. P. Kingma and M. Welling. *An Introduction to Variational Autoencoders.* Foundations and Trends in
#   Machine Learning 12(4), 2019. arXiv:1906.02691.
# - M. D. Hoffman and M. J. Johnson. *ELBO surgery: yet another way to carve up the variational evidence
#   lower bound.* NIPS 2016 Workshop on Advances in Approximate Bayesian Inference (the split of the
#   average KL into $I_q(x; z)$ and $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ in Section 5).
# - G. E. Hinton and R. R. Salakhutdinov. *Reducing the Dimensionality of Data with Neural Networks.*
#   Science 313(5786), 2006 (deep autoencoders).
# - P. Baldi and K. Hornik. *Neural networks and principal component analysis: learning from examples
#   without local minima.* Neural Networks 2(1), 1989 (Exercise 1).

# %%
import flax  # noqa: E402

print(
    f"chapter ran in {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
    f"(load average {os.getloadavg()[0]:.1f})"
)
print(
    "python",
    sys.version.split()[0],
    "| jax",
    jax.__version__,
    "| flax",
    flax.__version__,
    "| optax",
    optax.__version__,
    "| vae_lib",
    vae_lib.__version__,
)
