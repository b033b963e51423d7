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
# - Why its code space has *holes*, measured rather than asserted, and why you cannot generate new data
#   by decoding random codes. This is the motivation for the variational autoencoder (VAE) of the next
#   chapters.
#
# **Prerequisites**: Python and NumPy; the idea of a neural network trained by gradient descent; a first
# look at JAX (`jax.numpy`, `jax.random` keys, `jax.jit`). No probability beyond the mean and variance is
# needed in this chapter.
#
# **Where this fits.** Chapter 2 builds the theory of the VAE (the generative model, the ELBO, the
# reparameterization trick), Chapter 3 trains a VAE on the 2-D toy data of the seed article, and Chapter 4
# trains VAEs on MNIST digits.

# %%
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
from vae_lib.plotting import image_grid, latent_scatter

plt.rcParams["figure.dpi"] = 80
T_START = time.perf_counter()
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


def train(model, x, *, key, epochs, batch_size, learning_rate):
    """Train in place; return the mean training loss of each epoch."""
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    x = jnp.asarray(x)
    num_batches = x.shape[0] // batch_size  # the last partial batch is dropped
    history = []
    for _ in tqdm(range(epochs), desc="epochs", mininterval=2, ncols=100, file=sys.stderr):
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
# of `vae_lib.data.toy_2d` (2,000 points; Chapter 3 uses the seed article's own 2-D data).

# %%
key, key_init, key_train = jax.random.split(key, 3)
x_toy = toy_2d("two_moons", 2000, seed=0)  # (2000, 2) float32
toy_ae = Autoencoder(2, 1, (64, 64), rngs=nnx.Rngs(key_init))
toy_history = train(toy_ae, x_toy, key=key_train, epochs=60, batch_size=100, learning_rate=3e-3)
print(
    f"toy autoencoder: loss {toy_history[0]:.3f} after the first epoch, {toy_history[-1]:.4f} after the last"
)
print(f"total variance of the data (the loss of always answering the mean): {x_toy.var(axis=0).sum():.3f}")

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
print(f"99% of reconstructions lie within {far_radius:.3f} of their input")
print(f"fraction of the code interval [{t[0]:.2f}, {t[-1]:.2f}] that decodes off the data: {frac_off:.2f}")

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
assert toy_history[-1] < 0.05 * x_toy.var(axis=0).sum(), "the curve should explain > 95% of the variance"
assert 0.01 < frac_off < 0.15, frac_off
# The codes of the data avoid the off-data stretch of the interval: it is a hole in the code space.
assert np.mean(np.interp(z_toy, t, off_data.astype(float)) > 0.5) < 0.01

# %% [markdown]
# The decoder has learned a single curve that runs along the upper moon, **jumps across empty space**, and
# runs along the lower moon (the orange stretch). The encoder projects each point to (roughly) the nearest
# point of the curve, and the reconstruction error is small: the curve explains more than 95% of the
# variance of the data. Now look at the codes on the right. The data use two intervals of the code line,
# separated by a gap that **less than 1% of the data points** fall in. The decoder stretches that short gap
# (between 1% and 15% of the code interval; the share printed above depends on the run) across the whole
# bridge: a small step in code makes a large jump in the output. Nothing constrains the decoder there,
# because no training code falls there.
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
sse_test2 = np.mean(np.sum((rec_test2 - x_test) ** 2, axis=1))
print(
    f"training loss {ae2_history[0]:.1f} -> {ae2_history[-1]:.1f}; test squared error {sse_test2:.1f} per digit"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.1]})
latent_scatter(z_train2, y_train, ax=axes[0], title="Codes of the 4,000 training digits")
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
# each falls in the holes: a point is **in a hole** when it is farther from every training code than 99% of
# the *test* digits' codes are.


# %%
def hole_fraction(z_samples, z_train, z_test):
    """Share of z_samples farther from every training code than 99% of the test codes are."""
    radius = np.quantile(nearest(z_test, z_train)[0], 0.99)
    return float(np.mean(nearest(z_samples, z_train)[0] > radius))


def random_codes(key, z_train, n):
    """n codes uniform in the bounding box of z_train, and n from a Gaussian fitted to z_train."""
    key_box, key_gauss = jax.random.split(key)
    lo, hi = z_train.min(axis=0), z_train.max(axis=0)
    box = jax.random.uniform(key_box, (n, z_train.shape[1]), minval=lo, maxval=hi)
    gauss = jax.random.multivariate_normal(key_gauss, z_train.mean(axis=0), np.cov(z_train.T), (n,))
    return np.asarray(box, np.float32), np.asarray(gauss, np.float32)


key, key_codes = jax.random.split(key)
box2, gauss2 = random_codes(key_codes, z_train2, 1000)
holes_box2 = hole_fraction(box2, z_train2, z_test2)
holes_gauss2 = hole_fraction(gauss2, z_train2, z_test2)
print(f"in a hole: {holes_box2:.0%} of the box samples, {holes_gauss2:.0%} of the fitted-Gaussian samples")

# %% [markdown]
# What do those random codes decode to? To label a decoded image without training a classifier we give it
# the label of its nearest training digit in pixel space (a 1-nearest-neighbour classifier; it labels
# the real test digits correctly about 94% of the time).

# %%
dist_test, idx_test = nearest(x_test, x_train)
knn_accuracy = np.mean(y_train[idx_test] == y_test)
decoded_box2 = np.asarray(ae2.decode(box2))  # (1000, 784)
box2_labels = y_train[nearest(decoded_box2, x_train)[1]]
box2_mix = np.bincount(box2_labels, minlength=10) / len(box2_labels)
print(f"1-NN accuracy on the test digits: {knn_accuracy:.3f}")
print("share of each digit among decoded box samples:", np.round(box2_mix, 2))

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
latent_scatter(z_train2, y_train, ax=axes[0], s=2, title="Training codes (colours) and 40 box samples (x)")
axes[0].scatter(box2[:40, 0], box2[:40, 1], marker="x", color="k", s=25)
image_grid(decoded_box2[:40], ncols=10, ax=axes[1], title="The 40 box samples, decoded")
fig.tight_layout()
plt.show()

# %%
assert knn_accuracy > 0.9
assert 0.25 < holes_box2 < 0.75, holes_box2
assert 0.03 < holes_gauss2 < 0.4, holes_gauss2
assert box2_mix.max() > 0.25 and np.sum(box2_mix < 0.05) >= 4, box2_mix

# %% [markdown]
# Two things to see.
#
# - **Holes.** More than a quarter of the bounding box (this run's share is printed above) is farther from
#   every training code than 99% of the test digits' codes are. Even a Gaussian fitted to the codes puts
#   some of its samples (at least 3%) in such holes.
# - **No distribution.** With only two code dimensions the decoder is a smooth sheet of images and
#   usually still draws *something* digit-like in the holes: it extrapolates the nearest cluster, so far
#   from the codes it draws exaggerated versions of a few digits, with blurred blends in between. But the
#   mix is wrong: one digit makes up
#   more than 25% of the box samples and at least four digits make up less than 5% each, while the data
#   hold 10% of each. The area a class happens to occupy in code space is an accident of training, not a
#   probability.
#
# ## 4. More code dimensions, deeper holes
#
# A 2-D code is good for pictures but loses a lot (the blurry reconstructions). Give the autoencoder a
# 16-D code and it reconstructs much better. But a 16-D box is vast and the codes fill almost none of it.

# %%
key, key_init, key_train, key_codes = jax.random.split(key, 4)
ae16 = Autoencoder(784, 16, (256, 32), images=True, rngs=nnx.Rngs(key_init))
ae16_history = train(ae16, x_train, key=key_train, epochs=20, batch_size=100, learning_rate=1e-3)

z_train16 = np.asarray(ae16.encode(x_train))
z_test16 = np.asarray(ae16.encode(x_test))
rec_test16 = np.asarray(ae16(x_test))
sse_test16 = np.mean(np.sum((rec_test16 - x_test) ** 2, axis=1))
box16, gauss16 = random_codes(key_codes, z_train16, 1000)
holes_box16 = hole_fraction(box16, z_train16, z_test16)
holes_gauss16 = hole_fraction(gauss16, z_train16, z_test16)
print(f"test squared error per digit: {sse_test16:.1f} with a 16-D code, {sse_test2:.1f} with a 2-D code")
# Does a reconstruction still show the right digit? Label it with its nearest training digit (1-NN).
same_digit2 = np.mean(y_train[nearest(rec_test2, x_train)[1]] == y_test)
same_digit16 = np.mean(y_train[nearest(rec_test16, x_train)[1]] == y_test)
print(
    f"reconstructions labelled as the right digit: {same_digit16:.0%} with a 16-D code, {same_digit2:.0%} with 2-D"
)
print(f"in a hole: {holes_box16:.0%} of the box samples, {holes_gauss16:.0%} of the fitted-Gaussian samples")

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
    f"{beyond_box16:.0%} of decoded box samples, {beyond_gauss16:.0%} of decoded Gaussian samples"
)

fig, axes = plt.subplots(1, 2, figsize=(11, 2.6))
image_grid(decoded_box16[:30], ncols=10, ax=axes[0], title="16-D code: box samples, decoded")
image_grid(decoded_gauss16[:30], ncols=10, ax=axes[1], title="16-D code: fitted-Gaussian samples, decoded")
fig.tight_layout()
plt.show()

# %%
assert sse_test16 < 0.6 * sse_test2, (sse_test16, sse_test2)
assert same_digit2 < 0.8 and same_digit16 > same_digit2 + 0.1, (same_digit2, same_digit16)
assert holes_box16 > 0.95, holes_box16
assert holes_gauss16 > 0.15, holes_gauss16
assert beyond_box16 > 0.7, beyond_box16
assert beyond_gauss16 > 0.25, beyond_gauss16

# %% [markdown]
# With 16 code dimensions the reconstructions improve a lot: the squared error falls by more than 40%, and
# the 1-NN labeller recognises the right digit in the reconstruction far more often (with a 2-D code it
# does so for fewer than 80% of the test digits, against about 94% for the digits themselves). But
# **essentially every** box sample (more than 95%) lies in a hole, and more than 70% of them decode to blobs
# and scribbles that are farther from every real digit than 90% of the reconstructions are. The
# fitted Gaussian does better only because it stays near the centre of the codes. Still, more than 15% of
# its samples fall in holes and more than a quarter decode to images no better than the worst tenth of the
# reconstructions: smudges, half-digits, blends of two classes.
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
#    $p(z) = \mathcal{N}(0, I)$), and train so that the codes of the data cover it. Then "draw
#    $z \sim p(z)$ and decode" is a generator, and the question "which codes?" has an answer.
# 2. **A smooth, probabilistic encoder.** Instead of one point $f_\phi(x)$, let the encoder output a small
#    *distribution* $q_\phi(z \mid x) = \mathcal{N}(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x))$
#    and train the decoder on codes drawn from it. The decoder then has to reconstruct $x$ from a whole
#    neighbourhood of codes, not from one point. Neighbourhoods of different digits overlap, so the decoder
#    has to be sensible between them. A penalty $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$ keeps these
#    neighbourhoods close to the prior, which closes the holes.
# 3. **A probabilistic decoder and one objective.** Make the decoder a distribution $p_\theta(x \mid z)$
#    too. The generative model $p(z)\,p_\theta(x \mid z)$ then gives every $x$ a likelihood
#    $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$. Training maximizes a lower bound on
#    $\log p_\theta(x)$ (the ELBO), which turns out to be exactly "reconstruction minus the KL penalty" of
#    points 1 and 2.
#
# Chapter 2 derives all of this; Chapters 3 and 4 train it on the toy data and on these digits, and draw
# the same pictures for the VAE's code space.
#
# ### The seed article's FAQ: "What is the difference between a VAE and an autoencoder?"
#
# The seed article answers that a VAE "uses variational inference to learn a generative model of the data",
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
#   that no data point uses decodes to a bridge across empty space.
# - On MNIST the codes form clusters with wide empty regions between them. In 2-D, decoded random codes
#   are mostly digit-like but in the wrong proportions. In 16-D almost all of the box and a good share of a
#   fitted Gaussian lie in holes, and the decoded samples are mostly not digits.
# - The missing pieces are a prior $p(z)$ that the codes are made to cover, and an encoder that outputs a
#   distribution so the decoder learns whole neighbourhoods. Together they make the VAE of Chapter 2.
#
# ## Exercises
#
# **Exercise 1 (a linear autoencoder is PCA).** Remove the activations: encoder $z = A x + a$ and decoder
# $\hat x = W z + b$, with $Z = 1$, on 2-D data. Train it on correlated Gaussian data and compare the
# decoder direction $W$ with the first principal component, and the loss with the smallest eigenvalue of the
# data covariance. Why must they agree?
#
# **Exercise 2 (interpolation).** Take the 2-D MNIST autoencoder, encode a test "1" and a test "0", and
# decode ten codes on the straight segment between them. What happens in the middle? How far are the codes
# on the segment from the nearest training code?
#
# **Exercise 3 (sampling the autoencoder as if it were a VAE).** A VAE generates by decoding
# $z \sim \mathcal{N}(0, I)$. Do that with the 2-D autoencoder. What fraction of the draws lands in a hole,
# and which digits come out?
#
# ### Solutions
#
# **Solution 1.** The best rank-1 reconstruction of centred data in squared error is the projection onto
# the top principal direction (Eckart–Young), and its error per point is the variance left in the other
# directions, the smallest eigenvalue $\lambda_2$ here. A linear autoencoder can represent exactly the
# rank-1 affine maps, so its optimum is that projection: $W$ spans the top eigenvector (up to sign and
# scale, since $z$ can be rescaled freely) and the loss tends to $\lambda_2$. (Without the bottleneck, or
# with nonlinearities, this equivalence breaks.)


# %%
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
# **Solution 2.** The segment from the "1" arm to the "0" blob crosses the middle of the code space. The
# decoded images change from a one into a zero by way of other digits or blurred blends. The middle codes
# are far from every training code, compared with how close a test digit's code usually is: a hole, the
# same thing as the bridge between the two moons in Section 2.

# %%
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
assert path_dist.max() > typical

# %% [markdown]
# **Solution 3.** The autoencoder's codes have an arbitrary location and scale: they were never asked to
# look like $\mathcal{N}(0, I)$, and here they spread over several units in at least one direction.
# Standard-normal draws cover only a patch of the code space near the origin, so the decoded draws come in
# a lopsided mix (at least three digits make up less than 5% each), and more than a third of the draws land
# in holes. In a VAE the KL term makes the codes cover the prior, which is why decoding
# $z \sim \mathcal{N}(0, I)$ is the right way to sample there.

# %%
key, key_prior = jax.random.split(key)
z_prior = np.asarray(jax.random.normal(key_prior, (1000, 2)))
holes_prior = hole_fraction(z_prior, z_train2, z_test2)
prior_labels = y_train[nearest(np.asarray(ae2.decode(z_prior)), x_train)[1]]
prior_mix = np.bincount(prior_labels, minlength=10) / len(prior_labels)
print(f"the codes' spread (standard deviation of each coordinate): {np.round(z_train2.std(axis=0), 2)}")
print(f"N(0, I) draws in a hole: {holes_prior:.0%}")
print("share of each digit among decoded N(0, I) draws:", np.round(prior_mix, 2))
assert z_train2.std(axis=0).max() > 1.5
assert holes_prior > 0.35 and np.sum(prior_mix < 0.05) >= 3, (holes_prior, prior_mix)

# ## References
#
# - D. P. Kingma and M. Welling. *Auto-Encoding Variational Bayes.* ICLR 2014. arXiv:1312.6114.
# - D. J. Rezende, S. Mohamed and D. Wierstra. *Stochastic Backpropagation and Approximate Inference in
#   Deep Generative Models.* ICML 2014. arXiv:1401.4082.
# - D. P. Kingma and M. Welling. *An Introduction to Variational Autoencoders.* Foundations and Trends in
#   Machine Learning 12(4), 2019. arXiv:1906.02691.
# - G. E. Hinton and R. R. Salakhutdinov. *Reducing the Dimensionality of Data with Neural Networks.*
#   Science 313(5786), 2006 (deep autoencoders).
# - P. Baldi and K. Hornik. *Neural networks and principal component analysis: learning from examples
#   without local minima.* Neural Networks 2(1), 1989 (Exercise 1).

# %%
import flax  # noqa: E402

print(f"chapter ran in {time.perf_counter() - T_START:.0f} s")
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
