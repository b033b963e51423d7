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
# # Chapter 13 — Discrete latents: the Gumbel-softmax relaxation and the VQ-VAE
#
# Every VAE so far had a continuous code $z \in \mathbb{R}^Z$. Some things are better described by a
# choice among a few options (which digit, which stroke style), and a code made of symbols from a finite
# alphabet can be counted in bits, stored, and modelled by any sequence model. This chapter builds the two
# standard ways to train an autoencoder with a discrete code, and measures both against the continuous
# VAE on the same digits with the same training budget.
#
# **What you will learn**
#
# - Why the reparameterization trick does not apply to a categorical latent, and the **Gumbel-max trick**
#   that turns sampling a category into an $\arg\max$ of noisy logits.
# - The **Gumbel-softmax (concrete) relaxation** (Jang, Gu & Poole, 2017; Maddison, Mnih & Teh, 2017):
#   replace the $\arg\max$ by a softmax at temperature $\tau$, and train a **categorical VAE** through it.
# - What the temperature does to the gradient, **measured against the exact gradient** on a case small
#   enough to enumerate every category: the bias grows with $\tau$, the variance falls; the
#   score-function (REINFORCE) estimator is unbiased and far noisier.
# - The **VQ-VAE** (van den Oord, Vinyals & Kavukcuoglu, 2017): a deterministic encoder whose outputs snap to
#   the nearest vector of a learned codebook, trained with the **straight-through** estimator and the
#   codebook and commitment losses.
# - **Codebook usage**: perplexity and dead codes, and a fix (k-means initialization and dead-code resets)
#   that brings the dead codes from most of the codebook to a handful.
# - How to compare a discrete and a continuous VAE **at the same number of bits**, and why a VQ-VAE needs
#   a prior fitted over its codes before it can generate, with a simple prior of our own and a plain
#   account of why the PixelCNN of the original work is stronger.
#
# **Prerequisites**: Chapter 2 (the ELBO, the reparameterization trick, the score-function estimator and
# its variance) and Chapter 4 (MLP VAEs on the digits, dynamic binarization, the fixed binary test set).
#
# **Units.** Log-likelihoods and ELBOs are in **nats per digit** (summed over the 784 pixels); code lengths
# are in **bits per digit** ($1$ nat $= 1/\ln 2 \approx 1.443$ bits). Test-set numbers come with their
# standard errors over the 1,000 test digits.
#
# A note on the article this course grew out of: its reference list cites "Rasmus et al. (2020), *DARTS:
# The Discrete Reparameterization Trick for Bayesian Inference in Deep Models*, ICLR". We could not find
# such a paper; DARTS is Liu, Simonyan & Yang's *Differentiable Architecture Search* (ICLR 2019), and the
# discrete reparameterization the title suggests is the Gumbel-softmax of this chapter. Its entry for
# DALL·E names the authors of DCGAN (Radford, Metz & Chintala) and links the page of DALL·E 2: DALL·E is
# Ramesh et al. (2021), and its image tokenizer is a discrete VAE trained with the Gumbel-softmax
# relaxation, the method of Section 4.

# %%
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import vae_lib
from vae_lib import discrete
from vae_lib.data import binarize, load_mnist5k
from vae_lib.plotting import image_grid

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()

key = jax.random.key(13)  # the chapter's one seed; every random draw below uses a key split from it
(
    k_step_demo,
    k_gumbel_max,
    k_relax_demo,
    k_simplex,
    k_test_bin,
    k_train_bin,
    k_vae_init,
    k_vae_fit,
    k_vae_eval,
    k_cat_init,
    k_cat_fit,
    k_cat_eval,
    k_grad,
    k_vq_init,
    k_vq_fit,
    k_kmeans,
    k_reset,
    k_mixture,
    k_samples,
    k_exercises,
) = jax.random.split(key, 20)


def mean_se(a):
    """Mean of per-digit values and its standard error over the digits."""
    a = np.asarray(a, np.float64)
    return a.mean(), a.std(ddof=1) / math.sqrt(a.size)


# %% [markdown]
# ## 1. Why the reparameterization trick stops at discrete latents
#
# A categorical latent with $K$ categories is a one-hot vector $z \in \{e_1, \dots, e_K\}$ drawn with
# probabilities $q = \operatorname{softmax}(\theta)$ from the encoder's logits $\theta$. A VAE needs the
# gradient of an expectation $F(\theta) = \mathbb{E}_{z \sim q_\theta}[f(z)]$ (for the ELBO's first term,
# $f(z) = \log p_\theta(x \mid z)$). With $K$ categories it is a finite sum, smooth in $\theta$:
#
# $$F(\theta) = \sum_{k=1}^K q_k f(e_k), \qquad \frac{\partial F}{\partial \theta_j} = q_j\,\big(f(e_j) - F(\theta)\big).$$
#
# In a VAE the sum has $K^M$ terms for $M$ categorical variables, far too many, so we estimate it from
# samples. The reparameterization trick of Chapter 2 wrote the sample as a differentiable function of the
# parameters and some noise. For a category, any such function is a **step function**: it jumps from one
# vertex to another, and is flat in between. Its derivative is zero almost everywhere, so automatic
# differentiation through a sampled category returns zero, whatever the true gradient is.

# %%
K_TOY = 4
theta = jnp.array([1.0, -0.5, 0.3, 2.0])  # logits of one categorical variable
f_values = jnp.array([2.0, -1.0, 3.0, 0.5])  # f(e_k) for the K one-hot vectors
exact = jax.grad(lambda t: jnp.dot(jax.nn.softmax(t), f_values))(theta)
q = jax.nn.softmax(theta)
np.testing.assert_allclose(exact, q * (f_values - jnp.dot(q, f_values)), rtol=1e-5)  # the formula above

g = jax.random.gumbel(k_step_demo, (K_TOY,))  # z = one_hot(argmax(theta + g)) is a draw of q (Section 2)
sampled = jax.grad(lambda t: jnp.dot(jax.nn.one_hot(jnp.argmax(t + g), K_TOY), f_values))(theta)
print("exact gradient of E[f(z)]:          ", np.round(exact, 3))
print("autodiff through one sampled z:     ", np.asarray(sampled))
assert np.all(np.asarray(sampled) == 0.0) and np.abs(exact).max() > 0.3

# %% [markdown]
# Three ways out, and this chapter measures all three:
#
# - the **score-function** (REINFORCE) estimator of Chapter 2, $f(z)\,\nabla_\theta \log q_\theta(z)$,
#   which needs no derivative of $f$ and is unbiased, but noisy;
# - a **continuous relaxation** that replaces the step by something smooth (Sections 2–5), biased but with
#   low variance;
# - giving up the stochastic encoder altogether: the VQ-VAE quantizes a deterministic encoder's output
#   and passes the gradient "straight through" the quantizer (Sections 6–9).
#
# ## 2. The Gumbel-max trick and its relaxation
#
# **Gumbel-max.** Add independent standard Gumbel noise $g_k = -\log(-\log u_k)$, $u_k \sim U(0, 1)$, to
# the logits and take the largest: $\arg\max_k(\theta_k + g_k)$ is a draw from
# $\operatorname{Cat}(\operatorname{softmax}(\theta))$, exactly (Gumbel, 1954; Maddison et al., 2014). The
# randomness now sits in noise that does not depend on $\theta$, as in the reparameterization trick; only
# the $\arg\max$ is still a step. The cell checks the frequencies of 100,000 draws against the softmax
# probabilities, within four binomial standard errors.

# %%
n_draws = 100_000
g = jax.random.gumbel(k_gumbel_max, (n_draws, K_TOY))  # (n, K)
freq = np.bincount(np.asarray(jnp.argmax(theta + g, axis=-1)), minlength=K_TOY) / n_draws
p = np.asarray(q, np.float64)
se = np.sqrt(p * (1 - p) / n_draws)
for k in range(K_TOY):
    print(
        f"category {k}: softmax probability {p[k]:.4f}, Gumbel-max frequency {freq[k]:.4f} (SE {se[k]:.4f})"
    )
assert np.all(np.abs(freq - p) < 4 * se)

# %% [markdown]
# **The relaxation.** Replace the one-hot $\arg\max$ by a softmax at temperature $\tau > 0$:
#
# $$y = \operatorname{softmax}\!\big((\theta + g)/\tau\big) \in \Delta^{K-1}.$$
#
# $y$ lies inside the probability simplex, is a smooth function of $\theta$ for fixed noise, and its largest
# entry is always the Gumbel-max category. As $\tau \to 0$ it tends to that one-hot vector; as
# $\tau \to \infty$, to the centre $(1/K, \dots, 1/K)$. Jang et al. (2017) call its distribution the
# *Gumbel-softmax*, Maddison et al. (2017) the *concrete* distribution (a CONtinuous relaxation of
# discrETE variables). `vae_lib.discrete.gumbel_softmax` computes it; two lines by hand give the same
# numbers from the same key.

# %%
by_hand = jax.nn.softmax((theta + jax.random.gumbel(k_relax_demo, (K_TOY,))) / 0.5)
library = discrete.gumbel_softmax(k_relax_demo, theta, temperature=0.5)
print("by hand:", np.round(by_hand, 4), " vae_lib.discrete:", np.round(library, 4))
np.testing.assert_allclose(by_hand, library, rtol=1e-6)

# %% [markdown]
# With $K = 3$ the simplex is a triangle and we can look at the samples. The mean of the relaxed sample
# is what a relaxed objective averages over; at every temperature it differs from the probabilities
# $q$ that the one-hot sample averages to, and that difference is where the relaxation's bias comes from.

# %%
theta3 = jnp.array([1.0, 0.0, -0.5])
q3 = np.asarray(jax.nn.softmax(theta3), np.float64)
vertices = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # barycentric -> plane
temperatures_shown = (0.1, 0.5, 1.0, 5.0)
N_SIMPLEX = 200_000  # draws per temperature for the averages; the first 2,000 are plotted
logits3 = jnp.broadcast_to(theta3, (N_SIMPLEX, 3))
argmax_gumbel = np.argmax(
    np.asarray(logits3 + jax.random.gumbel(k_simplex, (N_SIMPLEX, 3))), -1
)  # same noise
fig, axes = plt.subplots(1, 4, figsize=(13, 3.5), layout="constrained")
vertex_distance, mean_gap, gap_se = [], [], []
for ax, tau in zip(axes, temperatures_shown, strict=True):
    # the same key at every temperature: the same noise g, so the same argmax, relaxed more or less
    y = np.asarray(discrete.gumbel_softmax(k_simplex, logits3, temperature=tau), np.float64)  # (N, 3)
    assert np.array_equal(np.argmax(y, -1), argmax_gumbel)
    vertex_distance.append(np.mean(1.0 - y.max(-1)))  # half the L1 distance to the nearest vertex
    mean_gap.append(np.abs(y.mean(0) - q3).sum())
    gap_se.append(np.sqrt(y.var(0) / N_SIMPLEX).sum())  # a bound on the standard error of the L1 gap
    y = y[:2000]
    pts = y @ vertices
    ax.fill(*vertices.T, color="0.93")
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, c=np.argmax(y, -1), cmap="viridis", vmin=0, vmax=2)
    ax.scatter(*(q3 @ vertices), marker="*", s=150, c="red", label="q (probabilities)")
    ax.scatter(*(y.mean(0) @ vertices), marker="x", s=80, c="black", label="mean of y")
    for k, (vx, vy) in enumerate(vertices):
        ax.annotate(
            f"$e_{k + 1}$",
            (vx, vy),
            xytext=(0, 4 if k == 2 else -12),
            textcoords="offset points",
            ha="center",
        )
    ax.set_title(f"τ = {tau}")
    ax.set_xlabel("position in the simplex (corner $e_k$: category $k$)", fontsize="small")
    ax.set_xlim(-0.12, 1.12)
    ax.set_ylim(-0.12, 1.0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
axes[0].legend(loc="upper left", fontsize="x-small", framealpha=0.9)
fig.suptitle("2,000 Gumbel-softmax samples of a 3-category variable, q = softmax(1, 0, -0.5)")
plt.show()
for tau, d, m, s in zip(temperatures_shown, vertex_distance, mean_gap, gap_se, strict=True):
    print(f"τ = {tau:<4}: mean distance to the nearest vertex {d:.3f}, |E[y] - q|_1 = {m:.4f} (SE < {s:.4f})")
assert np.all(np.diff(vertex_distance) > 0) and vertex_distance[0] < 0.06 and vertex_distance[-1] > 0.5
assert mean_gap[0] < 0.01 and np.all(np.diff(mean_gap) > 0)
assert np.all(np.array(mean_gap[1:]) > 10 * np.array(gap_se[1:]))  # clearly not noise from τ = 0.5 up

# %% [markdown]
# At $\tau = 0.1$ almost every sample sits near a corner (on average ≈ 0.04 from the nearest vertex;
# colours show the $\arg\max$); at $\tau = 5$ they crowd the centre (≈ 0.58). The mean of $y$ moves
# from $q$ towards the centre as $\tau$ grows: the $L_1$ distance $\lVert \mathbb{E}[y] - q \rVert_1$ is
# below what 200,000 draws resolve at $\tau = 0.1$ (< 0.01), ≈ 0.07 at $\tau = 0.5$, ≈ 0.18 at
# $\tau = 1$ and ≈ 0.48 at $\tau = 5$, close to the centre's distance from $q$, 0.59.
#
# ## 3. The baseline, and the bit budget
#
# The comparison needs a continuous VAE trained on the same data with the same budget: Chapter 4's MLP VAE
# (784-500-20, Bernoulli decoder), trained with `vae_lib.fit` for 15 epochs of the 4,000 training digits,
# batches of 128, Adam with step size $10^{-3}$, dynamic binarization. Every model of this chapter gets
# exactly that: the same digits, the same epochs, batches, optimizer and step size, the same hidden layer of
# 500 units in the encoder and the decoder, and the same fixed binarization of the test set.
#
# **Bits.** How much information does a code carry? For the continuous VAE, the ELBO's KL term
# $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$ is the **rate**: the average number of nats needed to
# transmit $z$ with a code built on the prior (with "bits-back" coding, Hinton & van Camp, 1993), and
# an upper bound on the information $I(x; z)$ the code holds about the digit. Divided by $\ln 2$ it is in
# bits. For the discrete models below the same term is the KL from their posterior to their prior; for a
# code of $M$ positions with $K$ symbols each and a uniform prior it is at most $M \log_2 K$ bits, and
# exactly that for the VQ-VAE, whose code is deterministic. The negative ELBO is then **distortion plus
# rate**, $-\mathrm{ELBO} = -\mathbb{E}_q[\log p_\theta(x \mid z)] + \mathrm{KL}$, which is how the models
# are compared in Section 8.

# %%
EPOCHS, BATCH, LEARNING_RATE = 15, 128, 1e-3

digits = load_mnist5k()
x_train = jnp.asarray(digits.x_train)  # (4000, 784) grey levels, binarized afresh for every batch
x_test_grey = np.asarray(digits.x_test)  # (1000, 784)
x_test = jnp.asarray(binarize(k_test_bin, digits.x_test))  # (1000, 784) of 0s and 1s, fixed
x_train_fixed = jnp.asarray(binarize(k_train_bin, digits.x_train))  # one binarization, to count code usage
show = np.array([np.flatnonzero(digits.y_test == c)[0] for c in range(10)])  # one test digit per class

vae = vae_lib.mlp_vae(784, 20, hidden=(500,), rngs=nnx.Rngs(k_vae_init))
t0 = time.perf_counter()
vae_lib.fit(
    vae,
    x_train,
    key=k_vae_fit,
    epochs=EPOCHS,
    batch_size=BATCH,
    learning_rate=LEARNING_RATE,
    binarize=True,
    progress=False,
)
seconds = {"continuous VAE": time.perf_counter() - t0}
rec_vae, kl_vae = vae_lib.elbo_per_example(k_vae_eval, x_test, vae.encode, vae.decode)  # (1000,) each
rate_vae = mean_se(kl_vae / math.log(2))
print(
    f"continuous VAE: test ELBO {mean_se(rec_vae - kl_vae)[0]:.1f} ± {mean_se(rec_vae - kl_vae)[1]:.1f} nats, "
    f"rate KL = {rate_vae[0]:.1f} ± {rate_vae[1]:.1f} bits per digit"
)
assert 30.0 < rate_vae[0] < 45.0

# %% [markdown]
# The continuous VAE's rate after this training is ≈ 35 bits per digit. The discrete models get a code of
# **40 bits**: the categorical VAE 20 variables of $K = 4$ categories ($20 \log_2 4 = 40$), the VQ-VAE
# 5 positions with a codebook of $K = 256$ vectors ($5 \log_2 256 = 40$). That is ≈ 15% more than the
# continuous VAE uses: its rate cannot be set in advance (it is whatever training settles on), so the
# discrete models get a budget that is at least as large, and any advantage of the continuous VAE below
# is not a matter of a larger bit *budget* (Section 8 shows the discrete models end up *using* fewer bits).
#
# Why these two shapes for the same 40 bits? Each method is used in its usual regime: the Gumbel-softmax
# papers model MNIST with many categorical variables of few categories each, while a VQ-VAE shares one
# codebook of hundreds of vectors between all its code positions, which is where codebook usage becomes
# a problem worth studying (Sections 6–7).
#
# ## 4. A categorical VAE trained through the relaxation
#
# **The model.** The encoder maps a digit to $M \times K$ logits, $M = 20$ independent categorical
# variables $q_\phi(z \mid x) = \prod_{m=1}^M \operatorname{Cat}(z_m; \operatorname{softmax}(\theta_m(x)))$; the
# prior is uniform, $p(z) = \prod_m \operatorname{Cat}(z_m; 1/K)$; the decoder is `vae_lib.MLPDecoder`
# applied to the $M K = 80$ numbers of the concatenated one-hot vectors. The ELBO of this discrete model is
#
# $$\mathrm{ELBO}(x) = \mathbb{E}_{z \sim q_\phi(z \mid x)}[\log p_\theta(x \mid z)] - \sum_{m=1}^M
# \mathrm{KL}\big(\operatorname{Cat}(q_m) \,\|\, \operatorname{Cat}(1/K)\big),\qquad
# \mathrm{KL} = \sum_k q_{mk} \log q_{mk} + \log K,$$
#
# the KL in closed form (`discrete.kl_categorical_uniform`).
#
# **Training** (Jang et al., 2017) replaces each one-hot $z_m$ in the first term by a relaxed sample
# $y_m$, so the decoder sees points inside the simplices and the gradient flows through
# $\operatorname{softmax}((\theta + g)/\tau)$. This training objective is *not* the discrete model's ELBO
# and is not guaranteed to bound its $\log p(x)$: the decoder is evaluated at relaxed points that the
# discrete model never produces, while the KL term is the discrete one. It is a device to get gradients.
# (Maddison et al. (2017) relax the KL term as well, with the densities of the concrete distribution, and
# discuss the choice.) The test ELBO below is the discrete model's own, with one-hot samples, and is a true
# lower bound on its $\log p(x)$.
#
# The temperature is annealed per epoch, $\tau_e = \max(0.5, e^{-0.1 e})$ for epochs $e = 0, \dots, 14$:
# from 1 down to 0.5 (Jang et al. anneal per step with the same floor; Section 5 shows why the
# temperature matters).
#
# **The training loop**, written once for the discrete models: each epoch is one compiled
# `jax.lax.scan` over the batches (as in `vae_lib.fit`), with the model and optimizer state carried
# through the scan, and one key per step for the binarization and the model's noise.


# %%
def train(model, loss_fn, key, *, temperatures=None, after_epoch=None):
    """Minimize loss_fn(model, key, x_batch, temperature) with Adam over EPOCHS epochs of x_train.

    As vae_lib.fit: shuffled batches of BATCH digits (the last partial batch dropped), each binarized
    afresh; each epoch one compiled lax.scan. temperatures[e] is passed to loss_fn in epoch e;
    after_epoch(model, e) may change the model between epochs. Returns the mean loss of each epoch.
    """
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    num_batches = x_train.shape[0] // BATCH

    @jax.jit
    def epoch(state, key, x, temperature):
        k_perm, k_steps = jax.random.split(key)
        batches = jax.random.permutation(k_perm, x.shape[0])[: num_batches * BATCH].reshape(
            num_batches, BATCH
        )

        def step(state, inputs):
            idx, k = inputs
            k_bin, k_loss = jax.random.split(k)
            model, optimizer = nnx.merge(graphdef, state)
            xb = jax.random.bernoulli(k_bin, x[idx]).astype(jnp.float32)  # (B, 784) of 0s and 1s
            loss, grads = nnx.value_and_grad(loss_fn)(model, k_loss, xb, temperature)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        state, losses = jax.lax.scan(step, state, (batches, jax.random.split(k_steps, num_batches)))
        return state, losses.mean()

    history = []
    for e in range(EPOCHS):
        tau = 1.0 if temperatures is None else temperatures[e]
        state, loss = epoch(state, jax.random.fold_in(key, e), x_train, jnp.float32(tau))
        history.append(float(loss))
        if after_epoch is not None:
            nnx.update((model, optimizer), state)
            after_epoch(model, e)
            state = nnx.state((model, optimizer))
    nnx.update((model, optimizer), state)
    return history


class CategoricalVAE(nnx.Module):
    """M categorical latents of K categories, uniform prior, Bernoulli decoder on the M*K one-hot numbers."""

    def __init__(self, positions, categories, *, rngs):
        self.positions, self.categories = positions, categories
        self.hidden = nnx.Linear(784, 500, rngs=rngs)
        self.out = nnx.Linear(500, positions * categories, rngs=rngs)
        self.decoder = vae_lib.MLPDecoder(positions * categories, 784, hidden=(500,), rngs=rngs)

    def logits(self, x):
        h = jax.nn.relu(self.hidden(x))  # (B, 784) -> (B, 500)
        return self.out(h).reshape(x.shape[0], self.positions, self.categories)  # (B, M, K)

    def decode(self, z):
        return self.decoder(z.reshape(z.shape[0], -1))  # (B, M, K) one-hot or relaxed -> (B, 784) logits


def relaxed_loss(model, key, x, temperature):
    """Jang et al.'s training loss: -(E over relaxed y of log p(x|y) - KL), nats per digit, batch mean."""
    logits = model.logits(x)  # (B, M, K)
    y = discrete.gumbel_softmax(key, logits, temperature=temperature)  # (B, M, K), inside the simplices
    rec = vae_lib.bernoulli_log_prob(x, model.decode(y))  # (B,)
    kl = discrete.kl_categorical_uniform(logits).sum(axis=-1)  # (B, M) -> (B,)
    return -jnp.mean(rec - kl)


M_CAT, K_CAT = 20, 4
temperatures = [max(0.5, math.exp(-0.1 * e)) for e in range(EPOCHS)]
cat_vae = CategoricalVAE(M_CAT, K_CAT, rngs=nnx.Rngs(k_cat_init))
t0 = time.perf_counter()
cat_history = train(cat_vae, relaxed_loss, k_cat_fit, temperatures=temperatures)
seconds["categorical VAE"] = time.perf_counter() - t0


@nnx.jit
def categorical_elbo(model, key, x):
    """The discrete model's ELBO terms per digit, with one-hot z ~ q(z|x): (log p(x|z), KL), each (N,)."""
    logits = model.logits(x)
    z = jax.nn.one_hot(jax.random.categorical(key, logits), model.categories)  # (N, M, K) one-hot
    return vae_lib.bernoulli_log_prob(x, model.decode(z)), discrete.kl_categorical_uniform(logits).sum(-1)


k_hard, k_relaxed = jax.random.split(k_cat_eval)
rec_cat, kl_cat = categorical_elbo(cat_vae, k_hard, x_test)
relaxed_test = -float(relaxed_loss(cat_vae, k_relaxed, x_test, 0.5))
elbo_cat = mean_se(rec_cat - kl_cat)
print(f"training objective (relaxed, τ = 0.5), last epoch: {-cat_history[-1]:.1f} nats per digit")
print(f"the same relaxed objective on the test digits:     {relaxed_test:.1f}")
print(f"test ELBO of the discrete model (one-hot z):       {elbo_cat[0]:.1f} ± {elbo_cat[1]:.1f}")
print(
    f"KL = rate: {mean_se(kl_cat / math.log(2))[0]:.1f} bits per digit (at most {M_CAT * math.log2(K_CAT):.0f})"
)
assert -150.0 < elbo_cat[0] < -128.0
assert 2.0 < relaxed_test - elbo_cat[0] < 12.0 and abs(relaxed_test + cat_history[-1]) < 2.0

# %% [markdown]
# The test ELBO of the categorical VAE is ≈ −139 nats per digit, with a rate of ≈ 24 of its 40 possible
# bits. The relaxed objective is ≈ 6 nats *higher*, and the same on the training and the test digits
# (≈ −133): the gap is not overfitting. It is the relaxation gap: the decoder was trained on points
# inside the simplices and is evaluated at their corners, and the gap is expected to shrink as $\tau \to 0$ (Jang et al., 2017; not measured here).
#
# ## 5. The temperature: bias and variance of the gradient, against the exact gradient
#
# Section 2's picture suggests a trade-off: a small $\tau$ makes $y$ nearly one-hot, so $f(y)$ is nearly
# the $f(z)$ we want (small bias), but the softmax is then nearly a step and its derivative is either
# almost zero or very large (large variance); a large $\tau$ smooths the step (small variance) but moves
# $y$ away from the corners (large bias). To measure it we need the exact gradient, so we take a case
# small enough to enumerate: the trained categorical VAE, one test digit of each class, and **one**
# latent variable $z_m$ of that digit, the other 19 held at their most probable categories. For each digit,
# $m$ is the variable whose posterior is least certain (largest entropy), where the choice is most open.
# Then
#
# $$f(z_m) = \log p_\theta(x \mid z_m, \hat z_{-m}), \qquad
# \nabla_{\theta_m} \mathbb{E}_{q}[f] = \nabla_{\theta_m} \sum_{k=1}^{4} q_{mk}\, f(e_k)\quad\text{(exact)},$$
#
# and we compare three estimators of this 4-number gradient, each from 1,000 independent draws per digit
# and temperature:
#
# - **Gumbel-softmax**: $\nabla_{\theta_m} f(\operatorname{softmax}((\theta_m + g)/\tau))$;
# - **straight-through Gumbel-softmax** (Jang et al., 2017, §2.2): the decoder sees the one-hot
#   $\arg\max$, the gradient is the relaxed one's (`gumbel_softmax(..., hard=True)`);
# - **score function**: $f(z)\,\nabla_{\theta_m} \log q(z)$ with one-hot $z \sim q$, unbiased;
#
# at temperatures from 0.1 to 5. Pooled over the 10 digits, the **relative bias** is
# $\sqrt{\sum_i \lVert \mathbb{E}\hat g_i - g_i \rVert^2 / \sum_i \lVert g_i \rVert^2}$ and the
# **relative standard deviation** of one draw is $\sqrt{\sum_i \operatorname{tr}\operatorname{Cov}
# \hat g_i / \sum_i \lVert g_i \rVert^2}$. The bias is estimated from 1,000 draws, so it carries noise of
# its own: the "noise floor" column is the typical size of that noise, the relative standard deviation
# divided by $\sqrt{1000}$. A measured bias near its floor means "too small to detect", not "zero".

# %%
N_DRAWS = 1000
TAUS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
x_cases = x_test[show]  # (10, 784), one digit per class
logits_cases = cat_vae.logits(x_cases)  # (10, M, K)
q_cases = jax.nn.softmax(logits_cases)
entropy = -jnp.sum(q_cases * jnp.log(q_cases), axis=-1)  # (10, M)
position = np.asarray(jnp.argmax(entropy, axis=-1))  # the least certain variable of each digit
z_mode = jax.nn.one_hot(jnp.argmax(logits_cases, axis=-1), K_CAT)  # (10, M, K)
print(
    "entropy of the chosen variable (nats; at most log 4 = 1.39):",
    [round(float(h), 2) for h in entropy.max(-1)],
)

cat_graphdef, cat_state = nnx.split(cat_vae)


@jax.jit
def gradient_draws(state, key, x, z_mode, m, theta_m, tau):
    """N_DRAWS draws of each estimator of the gradient of E_q[f(z_m)] w.r.t. the logits theta_m (K,)."""
    model = nnx.merge(cat_graphdef, state)

    def f(y):  # log p(x | z_m = y, the other variables at their modes); y (K,) one-hot or relaxed
        return vae_lib.bernoulli_log_prob(x[None], model.decode(z_mode.at[m].set(y)[None]))[0]

    def gumbel_softmax_grad(k, hard):
        return jax.grad(lambda t: f(discrete.gumbel_softmax(k, t, temperature=tau, hard=hard)))(theta_m)

    def score_function_grad(k):
        c = jax.random.categorical(k, theta_m)
        return f(jax.nn.one_hot(c, K_CAT)) * jax.grad(lambda t: jax.nn.log_softmax(t)[c])(theta_m)

    k_soft, k_hard, k_score = (jax.random.split(k, N_DRAWS) for k in jax.random.split(key, 3))
    soft = jax.vmap(lambda k: gumbel_softmax_grad(k, False))(k_soft)  # (N_DRAWS, K)
    hard = jax.vmap(lambda k: gumbel_softmax_grad(k, True))(k_hard)
    return soft, hard, jax.vmap(score_function_grad)(k_score)


def exact_gradient(x, z_mode, m, theta_m):
    z_all = jnp.broadcast_to(z_mode, (K_CAT, *z_mode.shape)).at[:, m].set(jnp.eye(K_CAT))  # (K, M, K)
    f_k = vae_lib.bernoulli_log_prob(x[None], cat_vae.decode(z_all))  # (K,): f at each category
    return jax.grad(lambda t: jnp.dot(jax.nn.softmax(t), f_k))(theta_m)  # (K,)


sq_bias = {name: np.zeros(len(TAUS)) for name in ("Gumbel-softmax", "straight-through", "score function")}
variance = {name: np.zeros(len(TAUS)) for name in sq_bias}
sq_norm = 0.0
score_mean = np.zeros((10, K_CAT))  # the score function's draws do not depend on τ: pool all 6,000 per digit
g_cases = np.zeros((10, K_CAT))
for i in range(10):
    m = int(position[i])
    g_exact = np.asarray(exact_gradient(x_cases[i], z_mode[i], m, logits_cases[i, m]), np.float64)
    sq_norm += np.sum(g_exact**2)
    g_cases[i] = g_exact
    for j, tau in enumerate(TAUS):
        k_ij = jax.random.fold_in(k_grad, 100 * i + j)
        draws = gradient_draws(
            cat_state, k_ij, x_cases[i], z_mode[i], m, logits_cases[i, m], jnp.float32(tau)
        )
        for name, d in zip(sq_bias, draws, strict=True):
            d = np.asarray(d, np.float64)
            sq_bias[name][j] += np.sum((d.mean(0) - g_exact) ** 2)
            variance[name][j] += np.sum(d.var(0, ddof=1))
        score_mean[i] += np.asarray(draws[2], np.float64).mean(0) / len(TAUS)
rel_bias = {name: np.sqrt(b / sq_norm) for name, b in sq_bias.items()}
rel_sd = {name: np.sqrt(v / sq_norm) for name, v in variance.items()}
floor = {name: s / math.sqrt(N_DRAWS) for name, s in rel_sd.items()}

print(f"{'τ':>5} | {'Gumbel-softmax: bias (floor), sd':>33} | {'straight-through: bias (floor), sd':>35}")
for j, tau in enumerate(TAUS):
    gs, st = "Gumbel-softmax", "straight-through"
    print(
        f"{tau:5.1f} | {rel_bias[gs][j]:12.3f} ({floor[gs][j]:.3f}), {rel_sd[gs][j]:7.3f} "
        f"| {rel_bias[st][j]:13.3f} ({floor[st][j]:.3f}), {rel_sd[st][j]:7.3f}"
    )
sf_bias = np.sqrt(np.sum((score_mean - g_cases) ** 2) / sq_norm)  # from 6,000 draws per digit
sf_sd = np.sqrt(variance["score function"].mean() / sq_norm)
sf_floor = sf_sd / math.sqrt(N_DRAWS * len(TAUS))
print(
    f"score function (no τ; 6,000 draws per digit): bias {sf_bias:.3f} (floor {sf_floor:.3f}), sd {sf_sd:.1f}"
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for name, style in (("Gumbel-softmax", "o-"), ("straight-through", "s--")):
    axes[0].plot(TAUS, rel_bias[name], style, label=name)
    axes[1].plot(TAUS, rel_sd[name], style, label=name)
axes[0].plot(TAUS, floor["Gumbel-softmax"], ":", color="0.5", label="noise floor (Gumbel-softmax)")
axes[1].axhline(sf_sd, color="C3", label="score function (unbiased)")
for ax, title in zip(axes, ("relative bias of the mean gradient", "relative s.d. of one draw"), strict=True):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature τ")
    ax.set_title(title)
    ax.legend(fontsize="small")
axes[0].set_ylabel("‖E[ĝ] − g‖ / ‖g‖ (pooled over 10 digits)")
axes[1].set_ylabel("√tr Cov(ĝ) / ‖g‖")
plt.show()

gs_bias, gs_sd = rel_bias["Gumbel-softmax"], rel_sd["Gumbel-softmax"]
assert np.all(np.diff(gs_bias[2:]) > 0) and gs_bias[-1] > 0.6 and gs_bias[:2].max() < 0.2
assert np.all(np.diff(gs_sd) < 0) and gs_sd[0] > 20 * gs_sd[-1]
assert np.all(rel_sd["straight-through"] > gs_sd) and np.all(rel_bias["straight-through"][2:] > gs_bias[2:])
assert sf_bias < 3 * sf_floor  # unbiased: no bias detectable above its noise
assert sf_sd > 50 * gs_sd[TAUS.index(1.0)] and sf_sd > 8 * gs_sd[0]
one_draw_mse = gs_bias**2 + gs_sd**2  # relative mean squared error of a single Gumbel-softmax draw
print(
    "relative MSE of one draw:", {tau: round(float(e), 2) for tau, e in zip(TAUS, one_draw_mse, strict=True)}
)
assert TAUS[int(np.argmin(one_draw_mse))] in (1.0, 2.0)

# %% [markdown]
# What the measurement shows, pooled over the ten digits:
#
# - **Bias grows with temperature.** At $\tau = 5$ the mean Gumbel-softmax gradient is off by ≈ 81% of
#   the gradient's norm, at $\tau = 1$ by ≈ 34%, at $\tau = 0.5$ by ≈ 17%. At $\tau \le 0.2$ the measured
#   bias (≈ 0.06–0.09) is below its own noise floor: too small for 1,000 draws to detect.
# - **Variance falls with temperature**: the relative standard deviation of one draw goes from ≈ 3.8 at
#   $\tau = 0.1$ to ≈ 0.04 at $\tau = 5$, a factor of ≈ 100.
# - The **straight-through** version has a slightly larger bias (at $\tau \ge 0.2$, where it is above
#   its noise floor) and a larger variance at every temperature here: the decoder sees a corner, but the gradient
#   is the relaxed one's.
# - The **score function** is unbiased, as the theory says: from 6,000 draws per digit its measured bias
#   (≈ 0.8) is below its noise floor (≈ 1.0). But its relative standard deviation, ≈ 75, is more than 100
#   times the Gumbel-softmax one's at $\tau = 1$ and ≈ 20 times its largest, at $\tau = 0.1$ (a baseline
#   reduces it: Exercise 2).
#
# A single draw's mean squared error is $\text{bias}^2 + \text{variance}$; in this table it is smallest
# at $\tau = 2$ (≈ 0.38, relative to $\lVert g \rVert^2$), with $\tau = 1$ close (≈ 0.46). Training
# averages the gradient over a batch of 128 digits, which divides the variance (by up to 128) but not the
# bias, and that favours smaller temperatures: hence schedules that anneal towards $\tau \approx 0.5$.
# These are ten cases of one trained model; the numbers, not the shape of the trade-off, will differ
# for another model.
#
# ## 6. The VQ-VAE: a deterministic code and a straight-through gradient
#
# The VQ-VAE (van den Oord et al., 2017) avoids sampling altogether. The encoder outputs $M$ vectors
# $z_e^{(1)}, \dots, z_e^{(M)} \in \mathbb{R}^D$; each is replaced by its nearest neighbour in a learned
# codebook $e_1, \dots, e_K \in \mathbb{R}^D$,
#
# $$k^{(m)} = \arg\min_k \lVert z_e^{(m)} - e_k \rVert^2, \qquad z_q^{(m)} = e_{k^{(m)}},$$
#
# and the decoder reconstructs the digit from $z_q$. The code of a digit is the $M$ indices $k^{(m)}$.
# The $\arg\min$ has no useful gradient, so the VQ-VAE uses the **straight-through estimator** (Bengio,
# Léonard & Courville, 2013): in the forward pass the decoder gets $z_q$, in the backward pass the gradient
# with respect to $z_q$ is copied unchanged to $z_e$, as if the quantizer were the identity. In code,
# $z_q = z_e + \operatorname{sg}(e - z_e)$ with $\operatorname{sg}$ the stop-gradient. Then the
# reconstruction loss trains the encoder and decoder but never reaches the codebook, and two more terms
# are needed:
#
# $$\mathcal{L} = -\log p_\theta(x \mid z_q) + \sum_m \lVert \operatorname{sg}(z_e^{(m)}) - e_{k^{(m)}} \rVert^2
# + \beta \sum_m \lVert z_e^{(m)} - \operatorname{sg}(e_{k^{(m)}}) \rVert^2 .$$
#
# The **codebook loss** moves each used code vector towards the encoder outputs assigned to it; the
# **commitment loss**, with $\beta = 0.25$ as in the paper, keeps the encoder's outputs close to the code
# they chose, so they do not drift away faster than the codebook can follow. `discrete.vector_quantize`
# returns all four pieces; the cell checks the straight-through values and gradients on a small example.

# %%
z_e_demo = jnp.array([[0.9, 0.1], [-0.2, 1.4]])  # two encoder outputs in 2-D
codebook_demo = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
vq = discrete.vector_quantize(z_e_demo, codebook_demo)
print("codes:", vq.indices.tolist(), " z_q:", vq.z_q.tolist())
print(
    "codebook loss:",
    np.round(vq.codebook_loss, 3).tolist(),
    " commitment loss:",
    np.round(vq.commitment_loss, 3).tolist(),
)
jac = jax.jacobian(lambda z: discrete.vector_quantize(z, codebook_demo).z_q)(z_e_demo)  # (2, 2, 2, 2)
np.testing.assert_allclose(vq.z_q, codebook_demo[jnp.array([0, 1])])
np.testing.assert_allclose(jac.reshape(4, 4), np.eye(4))  # the identity: the gradient passes straight through
grad_codebook = jax.grad(lambda c: jnp.sum(discrete.vector_quantize(z_e_demo, c).z_q))(codebook_demo)
assert np.all(np.asarray(grad_codebook) == 0.0)  # the reconstruction path never reaches the codebook

# %% [markdown]
# The model: the same encoder body as before (784-500) with an output of $M \times D = 5 \times 16$
# numbers, a codebook of $K = 256$ vectors in $\mathbb{R}^{16}$ shared by the 5 positions, and
# `vae_lib.MLPDecoder` on the 80 numbers of $z_q$. The codebook starts uniform in $(-1/K, 1/K)$, a common
# choice in public implementations. With a uniform prior over the codes, the VQ-VAE's KL term is the
# constant $M \log K$ (Exercise 1), so it is left out of the loss, as in the paper.

# %%
M_VQ, K_VQ, D_VQ, BETA = 5, 256, 16, 0.25


class VQVAE(nnx.Module):
    """M code positions, a codebook of K vectors in R^D, Bernoulli decoder on the M*D numbers of z_q."""

    def __init__(self, positions, codes, dim, *, rngs):
        self.positions, self.codes, self.dim = positions, codes, dim
        self.hidden = nnx.Linear(784, 500, rngs=rngs)
        self.out = nnx.Linear(500, positions * dim, rngs=rngs)
        self.codebook = nnx.Param(
            jax.random.uniform(rngs.params(), (codes, dim), minval=-1 / codes, maxval=1 / codes)
        )
        self.decoder = vae_lib.MLPDecoder(positions * dim, 784, hidden=(500,), rngs=rngs)

    def encode(self, x):
        h = jax.nn.relu(self.hidden(x))  # (B, 784) -> (B, 500)
        return self.out(h).reshape(x.shape[0], self.positions, self.dim)  # (B, M, D)

    def quantize(self, x):
        return discrete.vector_quantize(self.encode(x), self.codebook[...])  # z_q (B, M, D), indices (B, M)

    def decode(self, z_q):
        return self.decoder(z_q.reshape(z_q.shape[0], -1))  # (B, M, D) -> (B, 784) logits


def vq_loss(model, key, x, temperature):
    """-log p(x|z_q) + codebook loss + BETA * commitment loss, summed over positions, batch mean."""
    del key, temperature  # deterministic encoder: no noise, no temperature
    vq = model.quantize(x)
    rec = vae_lib.bernoulli_log_prob(x, model.decode(vq.z_q))  # (B,)
    return jnp.mean(-rec + vq.codebook_loss.sum(-1) + BETA * vq.commitment_loss.sum(-1))


@nnx.jit
def vq_codes(model, x):
    return model.quantize(x).indices  # (N, M)


def code_usage(model):
    """Perplexity of the test digits' codes, number of codes no training digit uses, usage counts (K,)."""
    counts = discrete.code_counts(vq_codes(model, x_train_fixed), K_VQ)
    return float(discrete.code_perplexity(vq_codes(model, x_test), K_VQ)), int(jnp.sum(counts == 0)), counts


def norms(model):
    """Median norm of the code vectors, and of the encoder's outputs for the training digits."""
    z_e = model.encode(x_train_fixed).reshape(-1, model.dim)
    return float(jnp.median(jnp.linalg.norm(model.codebook[...], axis=1))), float(
        jnp.median(jnp.linalg.norm(z_e, axis=1))
    )


vq_plain = VQVAE(M_VQ, K_VQ, D_VQ, rngs=nnx.Rngs(k_vq_init))
perplexity_init, dead_init, _ = code_usage(vq_plain)
code_norm_init, output_norm_init = norms(vq_plain)
print(
    f"before training: code perplexity {perplexity_init:.1f}, dead codes {dead_init} of {K_VQ}; "
    f"median norm of the codes {code_norm_init:.3f}, of the encoder outputs {output_norm_init:.2f}"
)
t0 = time.perf_counter()
train(vq_plain, vq_loss, k_vq_fit)
seconds["VQ-VAE"] = time.perf_counter() - t0
perplexity_plain, dead_plain, counts_plain = code_usage(vq_plain)
print(f"after training:  code perplexity {perplexity_plain:.1f}, dead codes {dead_plain} of {K_VQ}")
code_norm = np.asarray(jnp.linalg.norm(vq_plain.codebook[...], axis=1))
dead_mask = np.asarray(counts_plain) == 0
print(
    f"median norm of the dead codes {np.median(code_norm[dead_mask]):.3f}, "
    f"of the used codes {np.median(code_norm[~dead_mask]):.2f}, of the encoder outputs {norms(vq_plain)[1]:.2f}"
)
assert dead_init < 0.2 * K_VQ and perplexity_init > 40 and code_norm_init < 0.05 * output_norm_init
assert dead_plain > 0.8 * K_VQ and perplexity_plain < 20
assert np.median(code_norm[dead_mask]) < 0.1 * np.median(code_norm[~dead_mask])

# %% [markdown]
# ## 7. Codebook usage: dead codes and a fix
#
# Two numbers describe how well the codebook is used:
#
# - the **perplexity** $\exp(-\sum_k p_k \log p_k)$ of the codes' frequencies $p_k$ over the test digits and
#   positions: the number of equally used codes that would have the same entropy, $K$ at best;
# - the **dead codes**: code vectors that no training digit is assigned to. A dead code receives no
#   gradient (the codebook loss only moves the codes that are used) and in practice stays dead.
#
# The plain VQ-VAE ends up using its codebook poorly: 236 of the 256 codes (≈ 92%) are dead and the
# perplexity is ≈ 9. It did not start that way: before training, the untrained encoder's outputs used all
# but 16 codes (perplexity ≈ 90). The codes died *during* training, by a rich-get-richer dynamic. All
# codes start in a tiny cube around 0 (median norm ≈ 0.01), while the encoder's outputs are about 100
# times farther out. A code that is used moves out towards its outputs and becomes the nearest code for a
# wider region; a code that loses its last output gets no more gradient, stays near 0, and is soon farther
# from every output than the codes that moved: in practice it stays dead. The printout bears this out: after
# training, the dead codes have a median norm of ≈ 0.03, about forty times less than the used codes'
# (≈ 1.1), while the encoder's outputs have grown to a median norm of ≈ 6.
#
# **The fix**, in two parts (both from the literature on robust VQ training: Łańcucki et al., 2020;
# Dhariwal et al., 2020):
#
# 1. **k-means initialization**: start the codebook at the k-means centres (`discrete.kmeans`) of the
#    untrained encoder's outputs for 1,000 training digits, so that every code starts among the outputs,
#    at their scale, rather than near 0;
# 2. **dead-code resets**: after each epoch, move every code that no training digit uses onto the encoder
#    output of a randomly chosen training digit and position. The last 3 epochs have no resets, so the
#    decoder can adapt to the final codebook.
#
# Both cost a few forward passes per epoch, negligible next to training; the optimizer, epochs and
# batches are unchanged. We train with k-means alone, and with both, from the same initial weights and
# with the same batches as the plain model (the same keys, on purpose): only the codebook treatment
# differs.

# %%
RESET_UNTIL = EPOCHS - 3


def kmeans_init(model, key):
    z_e = model.encode(x_train_fixed[:1000]).reshape(-1, D_VQ)  # (5000, 16) outputs of the untrained encoder
    model.codebook[...] = discrete.kmeans(key, z_e, K_VQ)


def reset_dead_codes(model, epoch):
    if epoch >= RESET_UNTIL:
        return
    z_e = model.encode(x_train_fixed).reshape(-1, D_VQ)  # (20000, 16)
    counts = discrete.code_counts(discrete.vector_quantize(z_e, model.codebook[...]).indices, K_VQ)
    pick = jax.random.choice(jax.random.fold_in(k_reset, epoch), z_e.shape[0], (K_VQ,), replace=False)
    model.codebook[...] = jnp.where((counts == 0)[:, None], z_e[pick], model.codebook[...])


vq_kmeans = VQVAE(M_VQ, K_VQ, D_VQ, rngs=nnx.Rngs(k_vq_init))  # the same initial weights as vq_plain
kmeans_init(vq_kmeans, k_kmeans)
t0 = time.perf_counter()
train(vq_kmeans, vq_loss, k_vq_fit)
seconds["VQ-VAE, k-means init"] = time.perf_counter() - t0

vq_fixed = VQVAE(M_VQ, K_VQ, D_VQ, rngs=nnx.Rngs(k_vq_init))
kmeans_init(vq_fixed, k_kmeans)
t0 = time.perf_counter()
train(vq_fixed, vq_loss, k_vq_fit, after_epoch=reset_dead_codes)
seconds["VQ-VAE, k-means init + resets"] = time.perf_counter() - t0

perplexity_kmeans, dead_kmeans, _ = code_usage(vq_kmeans)
perplexity_fixed, dead_fixed, counts_fixed = code_usage(vq_fixed)
for name, perp, dead in (
    ("plain", perplexity_plain, dead_plain),
    ("k-means init", perplexity_kmeans, dead_kmeans),
    ("k-means init + resets", perplexity_fixed, dead_fixed),
):
    print(f"{name:>22}: perplexity {perp:6.1f}, dead codes {dead:3d} of {K_VQ}")
assert dead_fixed < 0.1 * K_VQ and perplexity_fixed > 3 * perplexity_plain
assert dead_plain > dead_kmeans > dead_fixed and perplexity_plain < perplexity_kmeans < perplexity_fixed

fig, ax = plt.subplots(figsize=(7, 3.3))
for counts, label in ((counts_plain, "plain"), (counts_fixed, "k-means init + resets")):
    ax.plot(np.arange(1, K_VQ + 1), np.sort(np.asarray(counts))[::-1] + 1, label=label)
ax.set_yscale("log")
ax.set_xlabel("code, from most to least used")
ax.set_ylabel("assignments + 1 (training digits × positions)")
ax.set_title("Codebook usage of the two VQ-VAEs (256 codes)")
ax.legend()
plt.show()

# %% [markdown]
# k-means initialization alone leaves ≈ 140 of the 256 codes dead and raises the perplexity from ≈ 9 to
# ≈ 56; with the resets as well, 7 codes are dead at the end (codes that lost their digits in the last 3
# epochs, when resets have stopped) and the perplexity is ≈ 131. The curve shows the difference: the plain
# model's usage falls to zero after a couple of dozen codes, the fixed model's spreads over almost all of
# them.
#
# ## 8. The three models at a matched bit budget
#
# For each model, on the 1,000 fixed binary test digits (mean ± standard error over the digits):
#
# - **bits**: the rate, the KL term in bits (for the VQ-VAE with its uniform prior, exactly
#   $5 \log_2 256 = 40$);
# - **distortion** $-\mathbb{E}_q[\log p_\theta(x \mid z)]$ in nats, with one sample of $z$ per digit for the
#   two stochastic encoders, and at $z_q$ for the VQ-VAE;
# - **test ELBO** = $-$(distortion + rate), in nats; for the VQ-VAE, whose posterior is a point mass, it is
#   $\log p_\theta(x \mid z_q) + \log p(z_q)$, a valid lower bound on $\log p(x)$ of the model "uniform prior
#   over codes, then the decoder" (it is the log of one term of the sum
#   $p(x) = \sum_z p(z)\, p_\theta(x \mid z)$);
# - **squared error** of the reconstruction (the decoder's pixel probabilities at the posterior mean,
#   the most probable categories, or $z_q$) against the grey-level digit, summed over pixels;
# - **class kept**: the fraction of test digits whose reconstruction's nearest training digit (Euclidean
#   distance between grey levels) has the test digit's label. This nearest-neighbour classifier is crude
#   (on the original test digits it is right ≈ 94% of the time, printed below), but it needs no
#   training and turns "does the reconstruction still show the right digit?" into a number;
# - codebook **perplexity** and **dead codes**, for the discrete models.


# %%
@nnx.jit
def vq_terms(model, x):
    """log p(x|z_q) per digit and the decoded pixel probabilities at z_q."""
    logits = model.decode(model.quantize(x).z_q)
    return vae_lib.bernoulli_log_prob(x, logits), jax.nn.sigmoid(logits)


def squared_error(p):
    return np.sum((np.asarray(p, np.float64) - x_test_grey) ** 2, axis=-1)  # (1000,)


train_grey = np.asarray(digits.x_train)  # (4000, 784)


def class_kept(images):
    """1.0 where the nearest training digit of an image has the test digit's label, else 0.0: (1000,)."""
    a = np.asarray(images, np.float32)
    d2 = (a**2).sum(1)[:, None] - 2.0 * a @ train_grey.T + (train_grey**2).sum(1)[None]  # (1000, 4000)
    return (digits.y_train[np.argmin(d2, axis=1)] == digits.y_test).astype(np.float64)


reference_kept = mean_se(class_kept(x_test_grey))
print(
    f"nearest-neighbour label of the original test digits: right for {reference_kept[0]:.1%} ± {reference_kept[1]:.1%}"
)
assert 0.88 < reference_kept[0] < 0.98


cat_mode = jax.nn.one_hot(jnp.argmax(cat_vae.logits(x_test), -1), K_CAT)
cat_codes = np.asarray(jnp.argmax(cat_vae.logits(x_test), -1))
cat_train_codes = np.asarray(jnp.argmax(cat_vae.logits(x_train_fixed), -1))
rows = {
    "continuous VAE (20 Gaussian)": dict(
        bits=kl_vae / math.log(2), rec=rec_vae, recon=vae.reconstruct(x_test)
    ),
    "categorical VAE (20 x 4)": dict(
        bits=kl_cat / math.log(2),
        rec=rec_cat,
        recon=jax.nn.sigmoid(cat_vae.decode(cat_mode)),
        perplexity=float(discrete.code_perplexity(cat_codes, K_CAT)),
        dead=int(np.sum(np.bincount(cat_train_codes.ravel(), minlength=K_CAT) == 0)),
    ),
}
for name, model, perp, dead in (
    ("VQ-VAE plain (5 x 256)", vq_plain, perplexity_plain, dead_plain),
    ("VQ-VAE k-means init", vq_kmeans, perplexity_kmeans, dead_kmeans),
    ("VQ-VAE k-means + resets", vq_fixed, perplexity_fixed, dead_fixed),
):
    rec, probs = vq_terms(model, x_test)
    rows[name] = dict(
        bits=np.full(1000, M_VQ * math.log2(K_VQ)), rec=rec, recon=probs, perplexity=perp, dead=dead
    )
for r in rows.values():
    r["sq"], r["kept"] = squared_error(r["recon"]), class_kept(r["recon"])


def print_table(rows):
    print(
        f"{'model':>31} | {'bits':>10} | {'distortion':>11} | {'test ELBO':>12} | {'sq. error':>10} "
        f"| {'class kept':>11} | perplexity | dead"
    )
    for name, r in rows.items():
        b, d = mean_se(r["bits"]), mean_se(-np.asarray(r["rec"]))
        e = mean_se(np.asarray(r["rec"]) - np.asarray(r["bits"]) * math.log(2))
        s, c = mean_se(r["sq"]), mean_se(100 * r["kept"])
        usage = f"{r['perplexity']:10.1f} | {r['dead']:4d}" if "dead" in r else f"{'':>10} | {'':>4}"
        print(
            f"{name:>31} | {b[0]:4.1f} ± {b[1]:3.1f} | {d[0]:5.1f} ± {d[1]:3.1f} | {e[0]:6.1f} ± {e[1]:3.1f} "
            f"| {s[0]:4.1f} ± {s[1]:3.1f} | {c[0]:3.0f}% ± {c[1]:2.0f}% | {usage}"
        )


print_table(rows)
elbo_of = {
    name: mean_se(np.asarray(r["rec"]) - np.asarray(r["bits"]) * math.log(2))[0] for name, r in rows.items()
}
sq_of = {name: mean_se(r["sq"])[0] for name, r in rows.items()}
kept_of = {name: mean_se(r["kept"])[0] for name, r in rows.items()}
names = list(rows)
assert elbo_of[names[0]] > elbo_of[names[1]] + 10 and elbo_of[names[0]] > elbo_of[names[4]] + 10
assert elbo_of[names[4]] > elbo_of[names[2]] + 15
assert sq_of[names[4]] < sq_of[names[2]] - 5 and sq_of[names[0]] < sq_of[names[4]]
resets_gain = mean_se(rows[names[4]]["rec"] - rows[names[3]]["rec"])  # paired over the same test digits
print(f"distortion gained by the resets over k-means alone: {resets_gain[0]:.1f} ± {resets_gain[1]:.1f} nats")
assert abs(resets_gain[0]) < 6.0
assert kept_of[names[0]] > kept_of[names[4]] + 0.03 and kept_of[names[4]] > kept_of[names[2]] + 0.1

# %%
fig, axes = plt.subplots(5, 1, figsize=(7, 5.8), layout="constrained")
panels = [
    ("binary test digits", x_test[show]),
    ("continuous VAE", vae.reconstruct(x_test[show])),
    ("categorical VAE (most probable categories)", jax.nn.sigmoid(cat_vae.decode(cat_mode[show]))),
    ("VQ-VAE, plain", vq_terms(vq_plain, x_test[show])[1]),
    ("VQ-VAE, k-means init + resets", vq_terms(vq_fixed, x_test[show])[1]),
]
for ax, (title, images) in zip(axes, panels, strict=True):
    image_grid(images, ncols=10, ax=ax, title=title)
fig.suptitle("Reconstructions: 40 bits of discrete code, ≈ 35 bits of Gaussian code")
plt.show()

# %% [markdown]
# With a budget of 40 bits for the discrete codes and ≈ 35 used by the continuous one, after this short
# training:
#
# - The **continuous VAE** is the best model by a wide margin: its test ELBO (≈ −119 nats) is more than
#   10 nats above every discrete model's (asserted), its reconstructions have the smallest squared
#   error (≈ 14, against 23–35 for the discrete models), and ≈ 89% of them keep their class by the
#   nearest-neighbour test (against ≈ 82% for the fixed VQ-VAE, asserted higher by more than 3 points).
# - The **categorical VAE** (ELBO ≈ −139) spends only ≈ 24 of its 40 available bits: its posteriors are
#   not one-hot, so its KL is below $20 \log_2 4$. ≈ 83% of its reconstructions keep their class.
# - The **VQ-VAE** pays the full 40 bits under its uniform prior. The fixed codebook lowers its distortion
#   by ≈ 31 nats against the plain model's and raises its ELBO by as much (asserted: more than 15 nats);
#   the share of reconstructions that keep their class rises from ≈ 58% to ≈ 82%. Most of that comes
#   from the k-means initialization alone (ELBO ≈ −151); the resets add a small but clear ≈ 1.7 ± 0.4 nats
#   (standard error of the paired difference over the same test digits) and put ≈ 130 more codes to use.
#
# In the figure, the plain VQ-VAE turns most of the ten digits into blurred versions of a few shapes
# (its ≈ 9 codes in use per position); the fixed one keeps most, but not all, of them (here the 2, 7 and
# 9 come out as other digits).
#
# Where does the continuous VAE's advantage come from? Part of it is that the discrete models use far
# fewer bits than they are allowed: both land near 24 bits and a distortion of ≈ 122 nats (the VQ-VAE's
# effective code length under a fitted prior, Section 9, is ≈ 24 bits too). A plausible reason, which
# this chapter does not test: a Gaussian posterior's mean can move by any amount and its KL grows
# smoothly with it, so gradient descent can trade rate for distortion a little at a time, while a
# discrete code can only switch between symbols. VQ-VAEs shine elsewhere: with convolutional encoders that
# produce a grid of codes (one per image patch), large codebooks, long training and a strong prior. Even
# there, van den Oord et al. report a log-likelihood bound on CIFAR-10 of 4.67 bits per dimension for the
# VQ-VAE against 4.51 for a continuous VAE: close, not better.
#
# ## 9. A prior over the codes, and samples
#
# The VQ-VAE was trained without a prior (the uniform one only adds a constant). To **generate**, we need
# a distribution over codes that puts its mass where the encoder puts digits. Sampling uniform codes
# would decode combinations of positions that never occur together. Van den Oord et al. fit a separate
# **autoregressive prior** over the codes after training: a **PixelCNN** (van den Oord et al., 2016) over
# the 2-D grid of codes for images (a WaveNet for audio), which models each code given all the codes
# before it, $p(z) = \prod_m p(z^{(m)} \mid z^{(<m)})$, with a deep convolutional network.
#
# Here we fit two simple priors to the training digits' codes, by counting (no gradient training; each
# takes well under a second):
#
# - **independent**: one categorical distribution per position, from the code counts, with the
#   Krichevsky–Trofimov pseudo-count of 1/2 per code so that no test code gets probability 0;
# - **mixture**: a mixture of 10 such independent distributions, fitted by expectation–maximization; the
#   mixture component is a single discrete variable that can capture what the 5 positions have in
#   common (the digit's class, its slant). EM alternates computing each training code's probability of
#   belonging to each component and refitting each component's counts with those weights.
#
# Any prior gives a valid ELBO, $\log p_\theta(x \mid z_q) + \log p(z_q)$, and its code length
# $-\log_2 p(z_q)$ in bits replaces the 40 of the uniform prior: a better prior means fewer bits, a higher
# ELBO and, usually, samples more like the data.

# %%
codes_train = np.asarray(vq_codes(vq_fixed, x_train_fixed))  # (4000, 5)
codes_test = np.asarray(vq_codes(vq_fixed, x_test))  # (1000, 5)
positions = np.arange(M_VQ)
PSEUDO = 0.5


def fit_independent(codes, weights=None):
    """Log-probabilities (M, K) of one categorical per position, with PSEUDO added to each code's count."""
    w = np.ones(len(codes)) if weights is None else weights
    counts = np.stack([np.bincount(codes[:, m], weights=w, minlength=K_VQ) for m in positions]) + PSEUDO
    return np.log(counts / counts.sum(-1, keepdims=True))


def independent_log_prob(log_p, codes):
    return log_p[positions, codes].sum(-1)  # (N,) in nats


def fit_mixture(key, codes, components=10, iterations=50):
    """EM for a mixture of independent categoricals: weights (C,) and log-probabilities (C, M, K)."""
    resp = np.asarray(jax.random.dirichlet(key, jnp.ones(components), (len(codes),)), np.float64)  # (N, C)
    for _ in range(iterations):
        weights = resp.mean(0)
        log_p = np.stack([fit_independent(codes, resp[:, c]) for c in range(components)])  # M-step
        joint = np.log(weights) + np.stack([independent_log_prob(lp, codes) for lp in log_p], -1)  # (N, C)
        resp = np.exp(joint - joint.max(-1, keepdims=True))  # E-step
        resp /= resp.sum(-1, keepdims=True)
    return weights, log_p


def mixture_log_prob(weights, log_p, codes):
    joint = np.log(weights) + np.stack([independent_log_prob(lp, codes) for lp in log_p], -1)
    return np.logaddexp.reduce(joint, axis=-1)  # (N,)


log_p_independent = fit_independent(codes_train)
mix_weights, mix_log_p = fit_mixture(k_mixture, codes_train)
prior_rows = {
    "VQ-VAE fixed, uniform prior": rows["VQ-VAE k-means + resets"],
    "VQ-VAE fixed, independent prior": dict(
        rows["VQ-VAE k-means + resets"],
        bits=-independent_log_prob(log_p_independent, codes_test) / math.log(2),
    ),
    "VQ-VAE fixed, mixture prior": dict(
        rows["VQ-VAE k-means + resets"],
        bits=-mixture_log_prob(mix_weights, mix_log_p, codes_test) / math.log(2),
    ),
}
print_table(prior_rows)
bits_of = {name: mean_se(r["bits"])[0] for name, r in prior_rows.items()}
b_uniform, b_independent, b_mixture = bits_of.values()
assert b_uniform - 8 > b_independent > b_mixture + 1.5

# %% [markdown]
# The uniform prior costs 40 bits per digit; fitted to the training codes, the independent prior needs
# ≈ 27 bits for a test digit's code, and the mixture ≈ 24. The ELBO rises by the same amounts (in nats:
# bits × 0.69), from ≈ −149 to ≈ −140 and ≈ −138, about the categorical VAE's. The mixture's gain over
# the independent prior, ≈ 3 bits, is dependence between positions that one discrete variable can
# capture; an autoregressive prior conditions each code on *all* the previous ones, which is where a
# PixelCNN gets its advantage.
#
# **Samples.** Each prior gets 20 draws, shown in two rows of 10; for the two stochastic models, from the prior they
# were trained with.


# %%
def sample_codes(key, log_p, n):
    return np.asarray(jax.random.categorical(key, jnp.asarray(log_p), shape=(n, M_VQ)))  # (n, M)


def sample_mixture(key, n):
    k_c, k_z = jax.random.split(key)
    c = np.asarray(jax.random.categorical(k_c, jnp.log(mix_weights), shape=(n,)))
    return np.asarray(jax.random.categorical(k_z, jnp.asarray(mix_log_p[c])))  # (n, M)


def decode_codes(model, codes):
    return jax.nn.sigmoid(model.decode(model.codebook[...][codes]))  # (n, M) -> (n, 784)


n_show = 20
k_sample_vae, k_sample_cat, k_sample_uniform, k_sample_ind, k_sample_mix = jax.random.split(k_samples, 5)
uniform_cat = jax.nn.one_hot(jax.random.randint(k_sample_cat, (n_show, M_CAT), 0, K_CAT), K_CAT)
panels = [
    ("continuous VAE, z ~ N(0, I)", vae.sample(k_sample_vae, n_show)),
    ("categorical VAE, uniform prior", jax.nn.sigmoid(cat_vae.decode(uniform_cat))),
    (
        "VQ-VAE, uniform prior over codes",
        decode_codes(vq_fixed, sample_codes(k_sample_uniform, np.zeros((M_VQ, K_VQ)), n_show)),
    ),
    (
        "VQ-VAE, independent prior",
        decode_codes(vq_fixed, sample_codes(k_sample_ind, log_p_independent, n_show)),
    ),
    ("VQ-VAE, mixture prior", decode_codes(vq_fixed, sample_mixture(k_sample_mix, n_show))),
]
fig, axes = plt.subplots(5, 1, figsize=(7, 8), layout="constrained")
for ax, (title, images) in zip(axes, panels, strict=True):
    image_grid(images, ncols=10, ax=ax, title=title)
fig.suptitle("Samples from each model's prior (decoder means)")
plt.show()

# %% [markdown]
# Uniform codes decode mostly to noisy blobs and overlays: the decoder has never seen most of these
# combinations of codes. With the fitted priors, most samples are stroke-like and many are clear digits;
# the independent prior draws each position without regard to the others, so some of its samples are
# blends, and the mixture, which draws all five positions from one component, gives somewhat more clean
# digits in this figure. Twenty samples per prior are weak evidence for such differences; the code lengths
# above are the measurement. The categorical and continuous VAEs' samples from their own priors are
# blurred: both were trained with a KL term that pulls their posteriors towards the prior, which does not
# make them cover it, and both leave parts of it that decode to no digit (Chapter 4, Section 4).
#
# **Why our priors are weaker than a PixelCNN, plainly.** Both our priors are tables of counts. The
# independent prior ignores every dependence between positions; the mixture captures it only through
# one variable with 10 values. A PixelCNN models each code given all the codes before it with a deep
# network, shares what it learns across positions and contexts, and would be trained by gradient
# descent for a long time on many more codes; on images, its conditionals capture the layout of strokes
# that makes a sample look like a digit. Our 5-position MLP code has no spatial layout at all, so even a
# PixelCNN would be the wrong architecture for it; an autoregressive MLP or a small transformer over the 5
# positions would be the analogue, and would need its own training run, which this chapter's budget does
# not include.
#
# ## Summary
#
# - Sampling a category is a step function of the logits, so the reparameterization trick gives zero
#   gradients. The **Gumbel-max trick** makes the category an $\arg\max$ of logits plus fixed noise; the
#   **Gumbel-softmax** replaces the $\arg\max$ by a softmax at temperature $\tau$.
# - Measured against the exact gradient on one variable of a trained model (ten digits): the
#   Gumbel-softmax gradient's **bias grows** with $\tau$ (≈ 17% of the gradient's norm at $\tau = 0.5$,
#   ≈ 81% at $\tau = 5$) and its **variance falls** (relative s.d. ≈ 3.8 at $\tau = 0.1$, ≈ 0.04 at
#   $\tau = 5$); the score-function estimator is unbiased with a relative s.d. ≈ 75.
# - The relaxed training objective is not the discrete model's ELBO; evaluate a categorical VAE with
#   one-hot samples. Ours reaches a test ELBO ≈ −139 nats with a rate of ≈ 24 bits.
# - The **VQ-VAE** quantizes a deterministic code to a learned codebook, with a straight-through gradient,
#   a codebook loss and a commitment loss. Trained plainly, ≈ 92% of its 256 codes **died** during
#   training (perplexity ≈ 9); **k-means initialization and dead-code resets** left 7 dead codes and a
#   perplexity ≈ 131, and raised the test ELBO by ≈ 31 nats.
# - With a budget of 40 bits per digit for the discrete codes (≈ 35 used by the continuous VAE) and the
#   same training budget, the **continuous VAE** had the best ELBO and reconstructions here. Discrete codes
#   are for what needs symbols: compression to a known number of bits, and priors that are sequence
#   models.
# - A VQ-VAE generates through a **prior fitted over its codes**. Fitting one lowered the code length from
#   40 bits to ≈ 27 (independent per position) and ≈ 24 (a mixture); the original work used a PixelCNN,
#   which conditions every code on all the previous ones with a deep network.
#
# ## Exercises
#
# ### Exercise 1: the VQ-VAE's KL term
#
# The VQ-VAE's posterior puts all its mass on one code, $q(z \mid x) = \delta_{z_q(x)}$, and its prior is
# uniform over the $K^M$ codes. Show that $\mathrm{KL}(q(z \mid x) \,\|\, p(z)) = M \log K$ for every $x$,
# and say why that justifies leaving the KL out of the training loss, but not out of a reported ELBO.

# %% [markdown]
# <details><summary>Solution</summary>
#
# $\mathrm{KL}(q \,\|\, p) = \sum_z q(z) \log \frac{q(z)}{p(z)}$. Only $z = z_q(x)$ has $q(z) = 1 > 0$, so the
# sum is $\log \frac{1}{K^{-M}} = M \log K$: the entropy of a point mass is 0 and the cross-entropy with the
# uniform prior is $M \log K$. It does not depend on $x$ or on any parameter, so its gradient is zero and
# leaving it out of the loss changes nothing in training. But the ELBO, $\log p_\theta(x \mid z_q) - M\log K$,
# is a bound on $\log p(x)$ only with the constant in it: a reported "ELBO" without it would be
# $M \log K = 5 \ln 256 \approx 27.7$ nats too high for the models above.
#
# </details>
#
# ### Exercise 2: a baseline for the score function
#
# $\mathbb{E}_q[\nabla_\theta \log q_\theta(z)] = 0$, so subtracting a constant $b$ from $f(z)$ in the
# score-function estimator keeps it unbiased (Chapter 2, Exercise 1). For the first digit of Section 5,
# use $b = f(\hat z_m)$, the value at the most probable category (computed once, it does not depend on
# the draw), and measure the relative standard deviation with and without it from 1,000 draws. Check that
# the mean stays within four standard errors of the exact gradient.

# %% [markdown]
# <details><summary>Solution</summary>
#
# Without a baseline every draw multiplies $f$, a log-likelihood of about −100 nats, by the score, so
# each draw is large and their signs cancel only on average. With $b = f(\hat z_m)$ the estimator multiplies
# only the *difference* $f(z) - f(\hat z_m)$, which is 0 when the most probable category is drawn and a few
# nats otherwise: the relative standard deviation falls from ≈ 89 to ≈ 2.7 (asserted: by more than a factor
# of 10), and the mean stays on the exact gradient. Baselines like this one (and learned ones, e.g. Mnih
# & Gregor, 2014) are what make score-function training of discrete latents workable.
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 2: try it yourself first, then run this cell.
i, m = 0, int(position[0])
theta_m = logits_cases[i, m]


def f_case(y):
    return vae_lib.bernoulli_log_prob(x_cases[i][None], cat_vae.decode(z_mode[i].at[m].set(y)[None]))[0]


baseline = f_case(z_mode[i, m])  # f at the most probable category: a constant


def score_draw(k, b):
    c = jax.random.categorical(k, theta_m)
    return (f_case(jax.nn.one_hot(c, K_CAT)) - b) * jax.grad(lambda t: jax.nn.log_softmax(t)[c])(theta_m)


g_exact = np.asarray(exact_gradient(x_cases[i], z_mode[i], m, theta_m), np.float64)
k_no_baseline, k_baseline = jax.random.split(jax.random.fold_in(k_exercises, 2))
for b, label, k_b in ((0.0, "no baseline", k_no_baseline), (baseline, "baseline f(mode)", k_baseline)):
    d = np.asarray(jax.vmap(lambda k, b=b: score_draw(k, b))(jax.random.split(k_b, N_DRAWS)), np.float64)
    sd = np.sqrt(d.var(0, ddof=1).sum()) / np.linalg.norm(g_exact)
    print(f"{label:>17}: relative s.d. {sd:8.2f}")
    assert np.all(np.abs(d.mean(0) - g_exact) < 4 * d.std(0, ddof=1) / math.sqrt(N_DRAWS) + 1e-6)
    if b == 0.0:
        sd_plain = sd
    else:
        sd_baseline = sd
assert sd_baseline < sd_plain / 10


# %% [markdown]
# ### Exercise 3: bits wasted by dead codes
#
# Under a uniform prior, every code position costs $\log_2 K = 8$ bits whether or not the codes are used.
# For the **plain** VQ-VAE, fit the independent prior of Section 9 to its training codes and compute the
# test code length. How many of the 40 bits were wasted, and how does the answer relate to its perplexity?

# %% [markdown]
# <details><summary>Solution</summary>
#
# The fitted prior codes a test digit of the plain model in ≈ 13 bits instead of 40: more than two thirds
# of the uniform prior's bits pay for codes that are never (or rarely) used. The perplexity gives a quick
# estimate: it is $2^H$ for the entropy $H$ in bits of the code frequencies pooled over positions, and
# $M \log_2(\text{perplexity}) = 5 \log_2 9 \approx 16$ bits. Pooling the positions can only raise the
# entropy (the entropy of a mixture is at least the average entropy of its parts), so the independent
# prior, which codes each position with its own frequencies, needs fewer bits (up to the cost of fitting it).
# Dead codes do not only waste the bits of a uniform prior (a fitted prior recovers those); they waste
# **capacity**: the plain model's codes have the entropy of only ≈ 9 equally used choices (pooled over
# the positions), which is why its distortion was so much higher.
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 3: try it yourself first, then run this cell.
codes_plain_train = np.asarray(vq_codes(vq_plain, x_train_fixed))
codes_plain_test = np.asarray(vq_codes(vq_plain, x_test))
bits_plain = mean_se(
    -independent_log_prob(fit_independent(codes_plain_train), codes_plain_test) / math.log(2)
)
print(f"plain VQ-VAE, independent prior: {bits_plain[0]:.1f} ± {bits_plain[1]:.1f} bits (uniform prior: 40)")
print(f"M log2(perplexity) = {M_VQ * math.log2(perplexity_plain):.1f} bits")
assert bits_plain[0] < 20.0 and bits_plain[0] < M_VQ * math.log2(perplexity_plain) + 1.0


# %% [markdown]
# ### Exercise 4: why the variance explodes as $\tau \to 0$
#
# The Jacobian of $y = \operatorname{softmax}(s/\tau)$, $s = \theta + g$, is
# $\frac{1}{\tau}(\operatorname{diag}(y) - y y^\top)$. Use it to explain the two limits of Section 5's
# variance curve.

# %% [markdown]
# <details><summary>Solution</summary>
#
# When $\tau$ is small, $y$ is almost one-hot for most noise draws, and then $\operatorname{diag}(y) - yy^\top
# \approx 0$: the gradient is nearly zero. Only for the rare draws where the two largest $s_k$ are within
# about $\tau$ of each other is $y$ away from the corners, and there the Jacobian is of order $1/\tau$. An
# estimator that is almost always ≈ 0 and occasionally of order $1/\tau$ (on a set of probability of order
# $\tau$) has a variance of order $\tau \cdot (1/\tau)^2 = 1/\tau$, which diverges as $\tau \to 0$. The
# table of Section 5 shows it growing even a little faster: from $\tau = 0.5$ to $\tau = 0.1$ the relative
# s.d. goes from ≈ 1.2 to ≈ 3.8, a variance about ten times larger for a temperature five times smaller;
# the argument gives the direction, not the exact rate.
#
# When $\tau$ is large, $y \approx 1/K + (s - \bar s)/(K\tau)$ is nearly linear in $s$, so for every draw the
# Jacobian is nearly the same matrix $\frac{1}{K\tau}(I - \frac1K \mathbf{1}\mathbf{1}^\top)$ and $y$ is
# nearly the centre of the simplex. Every draw then gives nearly the same gradient,
# $\frac{1}{K\tau}(I - \frac1K \mathbf{1}\mathbf{1}^\top)\nabla f(\text{centre})$: the variance goes to 0,
# but this vector shrinks like $1/\tau$ while the exact gradient does not change, so the relative bias tends
# to 1. At $\tau = 5$ the table has a relative s.d. ≈ 0.04 and a relative bias ≈ 0.81, on its way there.
#
# </details>
#
# ## References
#
# - E. Jang, S. Gu and B. Poole. *Categorical Reparameterization with Gumbel-Softmax.* ICLR 2017.
#   arXiv:1611.01144.
# - C. J. Maddison, A. Mnih and Y. W. Teh. *The Concrete Distribution: A Continuous Relaxation of Discrete
#   Random Variables.* ICLR 2017. arXiv:1611.00712.
# - C. J. Maddison, D. Tarlow and T. Minka. *A\* Sampling.* NIPS 2014. arXiv:1411.0030 (the Gumbel-max trick
#   and its history). E. J. Gumbel. *Statistical Theory of Extreme Values and Some Practical
#   Applications.* US National Bureau of Standards, 1954.
# - A. van den Oord, O. Vinyals and K. Kavukcuoglu. *Neural Discrete Representation Learning.* NIPS 2017.
#   arXiv:1711.00937 (the VQ-VAE).
# - A. van den Oord, N. Kalchbrenner, O. Vinyals, L. Espeholt, A. Graves and K. Kavukcuoglu. *Conditional
#   Image Generation with PixelCNN Decoders.* NIPS 2016. arXiv:1606.05328.
# - Y. Bengio, N. Léonard and A. Courville. *Estimating or Propagating Gradients Through Stochastic Neurons
#   for Conditional Computation.* arXiv:1308.3432, 2013 (the straight-through estimator).
# - A. Łańcucki, J. Chorowski, G. Sanchez, R. Marxer, N. Chen, H. J. G. A. Dolfing, S. Khurana, T. Alumäe
#   and A. Laurent. *Robust Training of Vector Quantized Bottleneck Models.* IJCNN 2020. arXiv:2005.08520
#   (k-means re-initialization of the codebook).
# - P. Dhariwal, H. Jun, C. Payne, J. W. Kim, A. Radford and I. Sutskever. *Jukebox: A Generative Model for
#   Music.* arXiv:2005.00341, 2020 (random restarts of unused codes).
# - A. Ramesh, M. Pavlov, G. Goh, S. Gray, C. Voss, A. Radford, M. Chen and I. Sutskever. *Zero-Shot
#   Text-to-Image Generation.* ICML 2021. arXiv:2102.12092 (DALL·E; its discrete VAE is trained with the
#   Gumbel-softmax relaxation).
# - A. Mnih and K. Gregor. *Neural Variational Inference and Learning in Belief Networks.* ICML 2014.
#   arXiv:1402.0030 (baselines for the score-function estimator).
# - G. E. Hinton and D. van Camp. *Keeping the Neural Networks Simple by Minimizing the Description Length
#   of the Weights.* COLT 1993 (bits-back coding).
# - R. E. Krichevsky and V. K. Trofimov. *The Performance of Universal Encoding.* IEEE Transactions on
#   Information Theory 27(2), 1981 (the pseudo-count of 1/2).
# - H. Liu, K. Simonyan and Y. Yang. *DARTS: Differentiable Architecture Search.* ICLR 2019.
#   arXiv:1806.09055 (the paper the article's reference [8] seems to conflate with this chapter's topic).

# %%
import flax  # noqa: E402

print("training time (s):", {name: round(s, 1) for name, s in seconds.items()})
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
