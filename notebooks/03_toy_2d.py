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
# # Chapter 3 — A VAE on 2-D lattice data, with its exact likelihood
#
# The Chinese article this course grew out of (see the References) ends with a TensorFlow "VAE" trained on
# 2-D points, $x = \operatorname{round}(U[0, 10)^2 + \mathcal{N}(0, I))$. That code cannot train and its
# loss is not an ELBO (Appendix A lists why). This chapter keeps the data and does the experiment properly,
# in a setting small enough that every number can be checked: with a 2-D latent, the exact $\log p(x)$ is a
# 2-D integral that we can compute by quadrature, and the distribution that generated the data has a
# closed form.
#
# **What you will learn**
#
# - Why a continuous density fitted to data on the integer lattice is ill-posed (its likelihood grows
#   without bound), and the standard fix, *dequantization*.
# - How a VAE with a learned observation variance *collapses* onto a single Gaussian on these data
#   (KL $\to 0$, the decoder ignores $z$) from its default initialization, and why that is a failure of
#   the optimization, not what the ELBO asks for.
# - Why a fixed observation variance $\sigma^2$ acts as a KL weight $\beta$, and how a small one makes the
#   model use its latent.
# - How to read a trained 2-D VAE: samples, the aggregate posterior against the prior, and how the decoder
#   warps the latent plane into a square.
# - How to measure the gap $\log p(x) - \text{ELBO} = \mathbb{E}\,\mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x))$
#   as a number: exact $\log p(x)$ by quadrature, the ELBO and the importance-weighted estimate side by side,
#   with standard errors, and all three against the true distribution of the data.
#
# **Prerequisites**: Chapter 2 (the VAE, the ELBO, the reparameterization trick, the $\beta$-weighted
# objective); Chapter 1 is useful background. We use `vae_lib` (models, `fit`, evaluation, plotting);
# reading its docstrings is enough.
#
# Notation: $\mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q - \log p]$, always written with both arguments.

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
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

import vae_lib
from vae_lib.data import generate_data
from vae_lib.diagnostics import hole_fraction
from vae_lib.plotting import density_contours, latent_scatter, training_curves

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()
SEED = 0  # the chapter's one seed: NumPy data seeds derive from it, every JAX draw uses a key split from it
(k_deq_train, k_deq_test, k_learned, k_small, k_collapse, k_fixed, k_samples, k_agg, k_ref, k_holes, k_elbo,
 k_iwae, k_deq_more, k_ex2, k_ex3, k_ex4, k_ex5) = jax.random.split(jax.random.key(SEED), 17)  # fmt: skip

# %% [markdown]
# ## 1. The data, and what `round` does
#
# `vae_lib.data.generate_data(num_samples, noise_level, seed=...)` is the article's generator with an
# explicit seed: a point $u$ uniform in the square $[0, 10)^2$, plus Gaussian noise $n$ of standard deviation
# `noise_level` (the article uses 1), then `np.round`. With `rounded=False` it returns the same points
# before rounding, $u + n$. We draw 10,000 training points (the article's number) and 2,000 test points
# from a different seed.

# %%
# NBVAL_CHECK_OUTPUT
NOISE, N_TRAIN, N_TEST = 1.0, 10_000, 2_000
x_train_raw = generate_data(N_TRAIN, NOISE, seed=SEED, rounded=False)  # (N, 2), u + n before rounding
x_train_int = generate_data(N_TRAIN, NOISE, seed=SEED)  # (N, 2), what the article trains on
x_test_int = generate_data(N_TEST, NOISE, seed=SEED + 1)

lattice, counts = np.unique(x_train_int, axis=0, return_counts=True)
print("shapes:", x_train_int.shape, x_test_int.shape)
print("every coordinate an integer:", bool(np.all(x_train_int == np.round(x_train_int))))
print("distinct points among 10,000:", len(lattice))
print("coordinate range:", x_train_int.min(), "to", x_train_int.max())
assert np.array_equal(x_train_int, np.round(x_train_raw))  # the same draws, rounded
assert np.all(x_train_int == np.round(x_train_int)) and np.all(x_test_int == np.round(x_test_int))
assert len(lattice) == 227 and counts.max() > 80


# %% [markdown]
# Ten thousand points land on only 227 distinct lattice sites: the data are *discrete*, each site holding
# dozens of copies of the same point. Left: the points before rounding; middle: the data the article trains
# on (marker area proportional to the number of points at a site); right: one coordinate's histogram.


# %%
def outline_square(ax):
    ax.plot([0, 10, 10, 0, 0], [0, 0, 10, 10, 0], "k--", lw=1, label="$[0, 10]^2$")


fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
axes[0].scatter(x_train_raw[:3000, 0], x_train_raw[:3000, 1], s=2, alpha=0.5)
axes[0].set_title("before rounding (continuous)")
axes[1].scatter(lattice[:, 0], lattice[:, 1], s=counts / 3, alpha=0.7)
axes[1].set_title(f"rounded: {len(lattice)} distinct points")
for ax in axes[:2]:
    outline_square(ax)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    ax.set_xlim(-4, 14)
    ax.set_ylim(-4, 14)
axes[2].bar(*np.unique(x_train_int[:, 0], return_counts=True), width=0.8)
axes[2].set_xlabel("$x_1$ (rounded)")
axes[2].set_ylabel("number of points")
axes[2].set_title("one coordinate: a histogram on integers")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The true distribution
#
# The two coordinates are independent, and each is $k = \operatorname{round}(u + n)$ with
# $u \sim U[0, 10)$ and $n \sim \mathcal{N}(0, 1)$. The probability of an integer $k$ is the probability
# that $u + n$ falls in $[k - \tfrac12, k + \tfrac12)$:
#
# $$
# P(k) = \frac{1}{10}\int_0^{10} \Big[\Phi\big(k + \tfrac12 - u\big) - \Phi\big(k - \tfrac12 - u\big)\Big]\,du,
# $$
#
# with $\Phi$ the standard normal CDF. A one-dimensional integral of a smooth function: the midpoint rule
# with 4,000 points computes it to far better accuracy than we need (Appendix B derives a closed form and
# checks the two against each other). This is the ground truth we will compare the VAE with. First we check
# it against the counts.

# %%
_erf = np.vectorize(math.erf)


def true_prob_1d(k, noise=NOISE, width=10.0, num_points=4000):
    """P(round(u + n) = k), u ~ U[0, width), n ~ N(0, noise^2), by the midpoint rule in u: (...) -> (...)."""
    k = np.asarray(k, dtype=np.float64)[..., None]
    u = (np.arange(num_points) + 0.5) * width / num_points  # (M,) midpoints
    cdf = lambda t: 0.5 * (1.0 + _erf(t / (noise * math.sqrt(2.0))))  # noqa: E731
    return (cdf(k + 0.5 - u) - cdf(k - 0.5 - u)).mean(axis=-1)  # (..., M) -> (...)


def true_log_prob(k):
    """log P(x = k) of the rounded 2-D data: (N, 2) integers -> (N,), coordinates independent."""
    values, inverse = np.unique(np.asarray(k), return_inverse=True)  # few distinct integers: compute once
    return np.log(true_prob_1d(values))[inverse.reshape(np.shape(k))].sum(axis=-1)


ks = np.arange(-6, 17)
p1 = true_prob_1d(ks)
expected = N_TRAIN * p1
observed = np.array([(x_train_int[:, 0] == k).sum() for k in ks])
z_scores = (observed - expected) / np.sqrt(expected)
print(f"sum of P(k) over k in [-6, 16]: {p1.sum():.10f}")
print(
    f"largest |observed - expected| / sqrt(expected) over the {len(ks)} values of x_1: {np.abs(z_scores).max():.2f}"
)
assert abs(p1.sum() - 1.0) < 1e-8
assert np.all(p1 > 0) and np.allclose(p1, p1[::-1])  # positive, symmetric about 5
assert np.abs(z_scores).max() < 4.0  # counts agree with P(k) within Poisson noise


# %% [markdown]
# ## 2. Why a continuous density on lattice data is ill-posed
#
# A VAE with a Gaussian decoder defines a *density* $p(x)$ on $\mathbb{R}^2$, and its log-likelihood is
# measured in nats per example *relative to the area element $dx$*. Lattice data let a density win without
# learning anything: put a narrow bump of width $s$ on every lattice site. Its density at a site is about
# $P(k) / (2\pi s^2)$, so $\log p(x) \approx \log P(k) - \log(2\pi s^2) \to +\infty$ as $s \to 0$. The
# maximum-likelihood problem has no solution, and a log-likelihood reported on such data measures how
# spiky a model can be rather than how well it fits.
#
# We show it with the simplest spiky model, a mixture of Gaussians of width $s$ on the lattice, weights
# the training frequencies (plus one, so that no test site gets weight zero). Held-out data do not save
# us: the test points sit on the same sites.

# %%
grid_1d = np.arange(-8, 19)
sites = np.stack(np.meshgrid(grid_1d, grid_1d, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)
count_of = {tuple(site): c for site, c in zip(lattice, counts, strict=True)}
site_counts = np.array([count_of.get(tuple(site), 0) for site in sites])
log_w = jnp.log((site_counts + 1.0) / (site_counts + 1.0).sum())  # (K,)


def spike_mixture_log_lik(x, s):
    """Mean log-density of x (N, 2) under sum_k w_k N(x; site_k, s^2 I): nats per example."""
    log_comp = vae_lib.gaussian_log_prob(x[:, None, :], sites[None], 2.0 * math.log(s))  # (N, K)
    return float(jax.nn.logsumexp(log_w + log_comp, axis=1).mean())


widths = [0.5, 0.1, 0.02, 0.004]
spike_ll = [spike_mixture_log_lik(jnp.asarray(x_test_int), s) for s in widths]
for s, ll in zip(widths, spike_ll, strict=True):
    print(f"bump width s = {s:<6}  test log-likelihood = {ll:7.2f} nats per example")
steps = np.diff(spike_ll)
print("increase per 5-fold narrowing:", np.round(steps, 3), " 2 log 5 =", round(2 * math.log(5), 3))
assert np.all(steps > 0)
assert np.allclose(steps[1:], 2 * math.log(5), atol=0.01)  # grows like -2 log s: without bound

# %% [markdown]
# Each five-fold narrowing adds $2 \log 5 \approx 3.22$ nats per example, forever. (For comparison, the
# true distribution gives the test data about $-4.98$ nats per example as a *probability* of lattice
# sites; we compute it in section 6.)
#
# ### The fix: dequantization
#
# Add uniform noise inside each lattice cell: $y = k + v$ with $v \sim U(-\tfrac12, \tfrac12)^2$, drawn once
# per point (Uria et al., 2013; Theis et al., 2016). The density of $y$ is $P(k)$ on the unit cell around
# $k$, bounded, so maximum likelihood is well posed again. And it answers the right question: for any
# density $p$, let $P_p(k) = \int_{\text{cell}(k)} p(y)\,dy$ be the probability it gives the site. By
# Jensen's inequality (the cell has area 1),
#
# $$
# \mathbb{E}_v\big[\log p(k + v)\big] \le \log \mathbb{E}_v\big[p(k + v)\big] = \log P_p(k),
# $$
#
# so the *expected* dequantized log-likelihood is a lower bound on the log-*probability* that the model
# gives the lattice data, the data the article actually generates. (For one draw of $v$, $\log p(k + v)$
# can lie above $\log P_p(k)$; the bound holds for the average over $v$.) We chose this over modelling the
# unrounded points because the rounding is part of the article's generator (a real data set would hand us
# only the rounded points) and because the number we report then means something for the discrete data;
# it is also the standard treatment of integer pixel values.
#
# What the model now sees is $y = u + n + e$ with $e = (k - (u + n)) + v$: the rounding error plus the
# dequantization noise. Both parts are close to uniform on $(-\tfrac12, \tfrac12)$ and independent, so $e$
# adds about $\tfrac1{12} + \tfrac1{12} = \tfrac16$ to the variance of each coordinate's noise, on top of
# the generator's 1 (checked below).
#
# Then we **standardize** with the training mean and standard deviation of each coordinate,
# $\tilde y = (y - m) / s$, so the network sees inputs of unit scale. Densities change by the Jacobian:
# $\log p_y(y) = \log p_{\tilde y}(\tilde y) - \sum_i \log s_i$. We report log-likelihoods in the
# standardized units (nats per example) and convert to the original units where we compare with the truth.


# %%
def dequantize(key, k):
    """k (N, 2) integers -> k + U(-1/2, 1/2)^2, float32 NumPy array."""
    return (k + np.asarray(jax.random.uniform(key, k.shape, minval=-0.5, maxval=0.5))).astype(np.float32)


y_train = dequantize(k_deq_train, x_train_int)
y_test = dequantize(k_deq_test, x_test_int)
mean, std = y_train.mean(axis=0), y_train.std(axis=0)
LOG_DET = float(np.log(std).sum())  # log |det| of the map y -> (y - m) / s
x_train = (y_train - mean) / std  # (N, 2), what the VAE is trained on
x_test = (y_test - mean) / std
extra_var = (y_train - x_train_raw).var(axis=0)  # variance of e = rounding error + dequantization noise
NOISE_VAR_STD = (NOISE**2 + extra_var) / std**2  # the total noise variance around u, in standardized units
print("mean:", np.round(mean, 3), " std:", np.round(std, 3), f" sum_i log s_i = {LOG_DET:.4f}")
print(f"variance of rounding + dequantization per coordinate: {np.round(extra_var, 4)} (1/6 = {1 / 6:.4f})")
print(f"noise variance around u, standardized: {np.round(NOISE_VAR_STD, 3)}")
assert np.all(np.round(y_train) == x_train_int)  # dequantized points stay in their cells
assert np.allclose(mean, 5.0, atol=0.05) and np.allclose(std, 3.08, atol=0.02)
assert abs(LOG_DET - 2.25) < 0.01
assert np.allclose(extra_var, 1 / 6, atol=0.006) and np.allclose(NOISE_VAR_STD, 0.123, atol=0.003)

# %% [markdown]
# The rounding and the dequantization add $\approx 1/6$ to the noise variance, as computed: around the
# uniform point $u$, each standardized coordinate carries noise of variance $(1 + 1/6)/s_i^2 \approx 0.123$.
#
# ## 3. A first VAE: learned observation variance, and posterior collapse
#
# The model: $p(z) = \mathcal{N}(0, I_2)$, a decoder $p_\theta(x \mid z) = \mathcal{N}(x; \mu_\theta(z),
# \operatorname{diag}\sigma^2)$ and an encoder $q_\phi(z \mid x) = \mathcal{N}(z; \mu_\phi(x),
# \operatorname{diag}\sigma_\phi^2(x))$, both MLPs with two hidden layers of 64 tanh units (smooth maps make
# smooth densities). Training maximizes the ELBO (a sum over the 2 data and 2 latent dimensions, averaged
# over batches of 128) with Adam, the step size decaying from $10^{-2}$ to 0 along a cosine, for 60 epochs.
#
# First we let the decoder *learn* its variance $\sigma^2$ (one per coordinate), starting, as
# `vae_lib.mlp_vae` does, from $\sigma^2 = 1$: the data's own variance. To see whether what happens is a
# property of the model or an accident of one run, we train it three times, from three initializations
# and three data orders (three keys).

# %%
EPOCHS, BATCH, LR, HIDDEN = 60, 128, 1e-2, (64, 64)
EVAL_SAMPLES = 100  # samples of z per test point for every ELBO quoted below (fit's per-epoch curve uses 1)


def make_optimizer():
    return optax.adam(optax.cosine_decay_schedule(LR, EPOCHS * (N_TRAIN // BATCH)))


def toy_vae(key, obs_logvar=None):
    """The 2-2 Gaussian VAE of this chapter; obs_logvar=None learns the decoder's variance (from 1)."""
    return vae_lib.mlp_vae(2, 2, hidden=HIDDEN, likelihood="gaussian", obs_logvar=obs_logvar,
                           activation=jax.nn.tanh, rngs=nnx.Rngs(key))  # fmt: skip


def train(model, key):
    """Train in place with this chapter's settings; return the history and the test ELBO's terms."""
    k_fit, k_eval = jax.random.split(key)
    history = vae_lib.fit(model, x_train, key=k_fit, epochs=EPOCHS, batch_size=BATCH,
                          optimizer=make_optimizer(), x_test=x_test, progress=False)  # fmt: skip
    return history, vae_lib.evaluate_elbo(k_eval, model, x_test, num_samples=EVAL_SAMPLES)


learned_runs = []
for run, k_run in enumerate(jax.random.split(k_learned, 3)):
    k_init, k_train = jax.random.split(k_run)
    model = toy_vae(k_init)
    history, terms = train(model, k_train)
    var = np.exp(np.asarray(model.decoder.obs_logvar[...]))
    learned_runs.append((model, history, terms))
    print(f"run {run}: test ELBO {float(terms.elbo):.3f}, KL {float(terms.kl):.4f} nats per example; "
          f"decoder variance {np.round(var, 3)}")  # fmt: skip
vae_learned, hist_learned, terms_learned = learned_runs[0]
elbo_learned = float(terms_learned.elbo)
assert all(float(t.kl) < 0.02 for _, _, t in learned_runs)  # all three collapse

# %% [markdown]
# In all three runs the KL term is essentially zero: the encoder returns the prior for every input, so the
# decoder receives noise that carries no information about $x$ and learns to (almost) ignore it. The
# decoder mean is then nearly constant (its standard deviation over $z \sim p(z)$ is about 0.1 in the first
# run, next cell, against 1 for the data), its variance is the data's variance (1, after standardization),
# and the "VAE" is one Gaussian. Its ELBO equals the log-likelihood of the best Gaussian fitted to the
# data, which we can compute without any network:

# %%
cov = np.cov(np.asarray(x_train).T)
gauss_ll = float(jnp.mean(vae_lib.gaussian_log_prob(x_test, x_train.mean(0), jnp.log(jnp.diag(cov)))))
out_learned = vae_learned.decode(jax.random.normal(k_collapse, (1000, 2)))
spread_of_mean = float(out_learned[0].std(axis=0).max())
print(f"best diagonal Gaussian on the test data: {gauss_ll:.3f} nats per example")
print(f"std of the decoder mean over z ~ p(z), run 0: {spread_of_mean:.3f}   (the data's std is 1)")
assert spread_of_mean < 0.2  # about 0.1
assert np.allclose(np.exp(np.asarray(vae_learned.decoder.obs_logvar[...])), 1.0, atol=0.05)
assert all(abs(float(t.elbo) - gauss_ll) < 0.01 for _, _, t in learned_runs)  # z is ignored
assert abs(gauss_ll + 2.841) < 0.01

# %% [markdown]
# **Is the collapse what the ELBO wants?** No. A learned variance can take any value, so a learned-variance
# model can reproduce the fixed-variance model of section 4 exactly (with $\sigma^2 = 0.02$), whose test
# ELBO is higher (about $-2.76$ against $-2.84$, sections 4 and 6): the best learned-variance model is at
# least that good, and the three runs above stopped at a worse point. What differs is where training
# starts. The cell below trains the same learned-variance model once more, with its variance *initialized*
# at 0.02 instead of 1 (still learned).

# %%
k_init, k_train = jax.random.split(k_small)
vae_small = toy_vae(k_init)
vae_small.decoder.obs_logvar[...] = jnp.full((2,), math.log(0.02))  # start small; training may change it
hist_small, terms_small = train(vae_small, k_train)
var_small = np.exp(np.asarray(vae_small.decoder.obs_logvar[...]))
print(
    f"learned variance started at 0.02: test ELBO {float(terms_small.elbo):.3f}, "
    f"KL {float(terms_small.kl):.2f} nats per example; decoder variance at the end {np.round(var_small, 3)}"
)
gain_small = float(terms_small.elbo) - gauss_ll  # over the collapsed runs' best Gaussian
assert abs(float(terms_small.kl) - 2.7) < 0.6 and abs(gain_small - 0.072) < 0.03  # measured: 2.66, 0.072
assert np.all((0.02 < var_small) & (var_small < NOISE_VAR_STD)) and np.all(np.abs(var_small - 0.066) < 0.03)

# %% [markdown]
# Started small, the same model uses its latent (KL $\approx$ 2.7 nats) and beats the collapsed runs by
# about 0.07 nats per example (one run). Its variance grew during training, to about 0.06 to 0.07, still
# below the data's noise variance around $u$ (0.123). So the collapse above is an **optimization failure**
# from the default initialization (three runs out of three), not the optimum of the ELBO.
#
# A mechanism consistent with these runs: after standardization the data have identity covariance, so a
# single Gaussian already explains all their second-order structure, and what is left to gain from $z$ is
# only the *non-Gaussian* shape (the flat top and the edges of the square), worth about 0.12 nats per
# example at most (section 6). A decoder that starts with $\sigma^2 = 1$ explains every point as noise from
# the first step; the KL term then pushes each $q(z \mid x)$ to the prior, after which the encoder gets no
# signal (the decoder ignores $z$) and the decoder gets none ($z$ carries nothing about $x$). Starting from
# a small variance, the reconstruction term is steep enough to make $z$ informative before that happens.
# This is *posterior collapse* (Bowman et al., 2016); Lucas et al. (2019) analyse, with linear VAEs, how the
# observation variance controls it. Section 4 makes the link to a KL weight precise.
#
# ## 4. A fixed, small observation variance is a KL weight
#
# With a fixed $\sigma^2$, the Gaussian log-likelihood is
# $\log p_\theta(x \mid z) = -\|x - \mu_\theta(z)\|^2 / (2\sigma^2) + \text{const}$, so
#
# $$
# \text{ELBO}_{\sigma^2}(x)
# = \frac{1}{\sigma^2}\Big(\mathbb{E}_q\big[-\tfrac12\|x - \mu_\theta(z)\|^2\big]
#   - \sigma^2\,\mathrm{KL}\big(q(z \mid x)\,\|\,p(z)\big)\Big) + \text{const}:
# $$
#
# up to a positive factor and a constant, it is Chapter 2's $\beta$-weighted objective for a unit-variance
# decoder, with $\beta = \sigma^2$. A small fixed variance is a small KL weight, and the latent becomes
# cheap to use. (Exercise 4 checks the identity on the trained model with `vae_lib.elbo(..., beta=...)`.) A
# learned variance chooses its own $\beta$, and starting at $\sigma^2 = 1$ it starts with the weight of the
# plain ELBO on data of unit variance, the setting in which section 3 collapsed.
#
# The article's generator is itself a latent-variable model: a latent point $u$ uniform in the square, then
# noise. A decoder variance fixed well below the data's variance forbids the "everything is noise"
# explanation: a collapsed model with $\sigma^2 = 0.02$ would score about $-48$ nats per example (next
# cell), so the decoder mean has to follow the data and $z$ has to say where in the square a point lies.
# We fix $\sigma^2 = 0.02$ in standardized units ($\sigma \approx 0.44$ in the original units). That is
# below the noise variance around $u$ (0.123, section 2), so $z$ also absorbs part of the noise; in exchange
# each posterior $p(z \mid x)$ is narrower and closer to a Gaussian, which the Gaussian encoder can match
# (Exercise 3 looks at two of them). The model and its ELBO are still a proper density and a proper bound:
# $\sigma^2$ is a modelling choice, and section 6 scores the result by its exact likelihood.

# %%
OBS_VAR = 0.02
collapsed_fixed = float(jnp.mean(vae_lib.gaussian_log_prob(x_test, 0.0, math.log(OBS_VAR))))
print(f"a collapsed model N(0, {OBS_VAR} I) would score {collapsed_fixed:.1f} nats per example")
assert abs(collapsed_fixed + 48) < 2

k_init, k_train = jax.random.split(k_fixed)
vae = toy_vae(k_init, obs_logvar=math.log(OBS_VAR))
t0 = time.perf_counter()
hist, terms_fixed = train(vae, k_train)
print(f"trained {EPOCHS} epochs in {time.perf_counter() - t0:.1f} s; test ELBO {float(terms_fixed.elbo):.3f}, "
      f"KL {float(terms_fixed.kl):.2f} nats per example")  # fmt: skip
assert abs(float(terms_fixed.kl) - 3.8) < 0.3

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
training_curves(hist, keys=("train_elbo", "test_elbo"), ax=axes[0], title="ELBO per epoch (one z per point)")
for line, name in zip(axes[0].get_lines(), ["train", "test"], strict=True):  # say which model these are
    line.set_label(f"{name} elbo, fixed $\\sigma^2$ = {OBS_VAR}")
for h, lw, name in [(hist_learned, 1, "learned $\\sigma^2$ from 1 (collapsed)"),
                    (hist_small, 1, "learned $\\sigma^2$ from 0.02")]:  # fmt: skip
    axes[0].plot(h["epoch"], h["test_elbo"], lw=lw, label=f"test elbo, {name}")
axes[0].axhline(gauss_ll, color="k", ls=":", lw=1, label="best single Gaussian")
curves = [hist["train_elbo"], hist["test_elbo"], hist_learned["test_elbo"], hist_small["test_elbo"]]
lowest, highest = min(map(min, curves)), max(map(max, curves))
axes[0].set_ylim(lowest - 0.2, highest + 0.2)  # every epoch of every curve is inside the frame
axes[0].legend(fontsize="small", loc="lower right")
zoom = axes[0].inset_axes([0.35, 0.45, 0.6, 0.4])  # the same curves, zoomed on the last 50 epochs
for line in axes[0].get_lines():
    zoom.plot(*line.get_data(), color=line.get_color(), ls=line.get_linestyle(), lw=line.get_linewidth())
zoom.set_xlim(10, EPOCHS)
zoom.set_ylim(-2.95, -2.7)
zoom.set_title("zoom: epochs 10 to 60", fontsize=9)
zoom.tick_params(labelsize=8)
zoom.grid(alpha=0.3)
axes[1].plot(hist["epoch"], hist["test_kl"], label=f"fixed $\\sigma^2$ = {OBS_VAR}")
axes[1].plot(hist_small["epoch"], hist_small["test_kl"], label="learned $\\sigma^2$ from 0.02")
axes[1].plot(hist_learned["epoch"], hist_learned["test_kl"], label="learned $\\sigma^2$ from 1 (collapsed)")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("KL(q(z|x) || p(z)), nats per example")
axes[1].set_title("The KL term: how much the latent is used")
axes[1].legend(fontsize="small")
axes[1].grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The fixed-variance model's KL term stays near 3.8 nats per example: the encoder tells the decoder a great
# deal about each point. Its ELBO starts far below the collapsed runs' (the first epochs, before the decoder
# mean follows the data) and ends above them (the inset zooms on epochs 10 to 60). The per-epoch curves
# are noisy because `fit` evaluates them with a single sample of $z$; section 6 gives precise numbers.
#
# ## 5. Looking at the model
#
# ### Samples next to the data
#
# A sample from the model is $z \sim p(z)$, then $x \sim p(x \mid z) = \mathcal{N}(\mu_\theta(z), \sigma^2
# I)$. We plot both the decoder means $\mu_\theta(z)$ (what `VAE.sample` returns) and the full samples with
# the observation noise, which are what the model says the data look like. Everything is mapped back to
# the original units.


# %%
def to_original(x):
    return np.asarray(x * std + mean)


k_z, k_eps = jax.random.split(k_samples)
z_prior = jax.random.normal(k_z, (N_TEST, 2))  # z ~ p(z)
dec_mean, dec_logvar = vae.decode(z_prior)  # (N, 2) each
x_model = dec_mean + jnp.exp(0.5 * dec_logvar) * jax.random.normal(k_eps, dec_mean.shape)  # x ~ p(x|z)

fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), sharex=True, sharey=True)
for ax, pts, title in [
    (axes[0], to_original(x_test), "test data (dequantized)"),
    (axes[1], to_original(dec_mean), r"decoder means $\mu_\theta(z)$, $z \sim p(z)$"),
    (axes[2], to_original(x_model), r"samples $x \sim p(x|z)$, $z \sim p(z)$"),
]:
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    outline_square(ax)
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_aspect("equal")
axes[0].set_ylabel("$x_2$")
axes[0].set_xlim(-4, 14)
axes[0].set_ylim(-4, 14)
fig.tight_layout()
plt.show()

dec_std = np.asarray(dec_mean.std(axis=0))
print("std of the decoder means per coordinate:", np.round(dec_std, 3))
assert np.all(np.abs(dec_std - 0.99) < 0.02)

# %% [markdown]
# Both look like the data. The decoder means alone already fill the square with soft edges: with
# $\sigma^2 = 0.02$ the observation noise adds only 2% of the variance, so the latent carries almost all of
# the noise around $u$ too (the means have standard deviation about 0.99 per coordinate, against 1 for the
# data). Exercise 5 puts a number on "square, not Gaussian blob".
#
# ### The latent space: aggregate posterior against the prior
#
# The *aggregate posterior* $q(z) = \frac1N\sum_n q(z \mid x_n)$ is what the decoder sees during training;
# the prior $p(z)$ is what it is fed when we sample. If the two differ, samples come from regions the
# decoder never learned. Left: encoder means of the training points, coloured by where the point is in the
# square (red grows with $x_1$, blue with $x_2$). Middle: samples from $q(z)$, one per training point.
# Right: samples from the prior.


# %%
def position_colours(x):
    """(N, 2) standardized points -> RGB colours: red with x_1, blue with x_2."""
    c = np.clip((np.asarray(x) + 1.8) / 3.6, 0.0, 1.0)
    return np.stack([c[:, 0], 0.3 * np.ones(len(c)), c[:, 1]], axis=1)


z_mean, z_logvar = vae.encode(x_train)  # (N, 2) each
z_agg = vae_lib.reparameterize(k_agg, z_mean, z_logvar)  # one z ~ q(z|x_n) per point: samples of q(z)
z_ref = jax.random.normal(k_ref, z_agg.shape)

fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
show = slice(0, 4000)  # plot 4,000 of the 10,000 points, to keep the figure light
axes[0].scatter(z_mean[show, 0], z_mean[show, 1], s=2, c=position_colours(x_train[show]))
axes[0].set_title("encoder means, coloured by position in x")
axes[0].set_xlabel("$z_1$")
axes[0].set_ylabel("$z_2$")
latent_scatter(z_agg[show], ax=axes[1], title="aggregate posterior q(z): samples", s=2)
latent_scatter(z_ref[show], ax=axes[2], title="prior p(z) = N(0, I): samples", s=2)
for ax in axes:
    for r in (1, 2, 3):
        ax.add_patch(plt.Circle((0, 0), r, fill=False, ls="--", lw=0.8, color="k"))
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(-4, 4)
    ax.set_ylim(-4, 4)
fig.tight_layout()
plt.show()

z_agg_cov = np.cov(np.asarray(z_agg).T)
post_sd = np.exp(0.5 * np.asarray(z_logvar))  # (N, 2)
aspect = np.median(post_sd.max(axis=1) / post_sd.min(axis=1))  # how far each q(z|x) is from round
print(
    "aggregate posterior: mean",
    np.round(np.asarray(z_agg.mean(0)), 3),
    " covariance",
    np.round(z_agg_cov, 3).tolist(),
)
print(
    f"a point's posterior standard deviations: mean {post_sd.mean():.3f}; "
    f"median ratio of the larger to the smaller: {aspect:.2f}"
)
assert np.all(np.abs(np.asarray(z_agg.mean(0))) < 0.05)
assert np.allclose(z_agg_cov, np.eye(2), atol=0.08)

# Chapter 1's hole fraction: the share of points farther from every training code than 99% of test codes are
z_test_mean, z_test_logvar = vae.encode(x_test)
k_h_prior, k_h_agg = jax.random.split(k_holes)
holes_prior = hole_fraction(jax.random.normal(k_h_prior, (N_TEST, 2)), z_mean, z_test_mean)
holes_agg = hole_fraction(vae_lib.reparameterize(k_h_agg, z_test_mean, z_test_logvar), z_mean, z_test_mean)
holes_se = {name: math.sqrt(h * (1 - h) / N_TEST) for name, h in [("prior", holes_prior), ("agg", holes_agg)]}
print(
    f"hole fraction: {holes_prior:.1%} +- {holes_se['prior']:.1%} of 2,000 prior draws, "
    f"{holes_agg:.1%} +- {holes_se['agg']:.1%} of 2,000 aggregate-posterior draws (binomial standard errors)"
)
assert abs(holes_prior - 0.025) < 0.015 and abs(holes_agg - 0.015) < 0.012  # about 2.5% and 1.5%
assert abs(post_sd.mean() - 0.15) < 0.03
assert abs(aspect - 1.26) < 0.12

# %% [markdown]
# The aggregate posterior has mean about 0 and covariance about the identity, like the prior, and the
# colours show a smooth, ordered map: neighbouring points in the square get neighbouring codes. Each single
# posterior is narrow (standard deviation about 0.15, against 1 for the prior), which is the KL term of
# 3.8 nats at work: $z$ pins down a point's position to a small patch. With Chapter 1's measure of holes
# (a point farther from every training code than 99% of the test points' codes are from theirs), prior
# draws land in a hole almost as rarely as draws from the aggregate posterior itself (about 2.5% against
# 1.5%, each with a binomial standard error of about 0.3 points, printed above): on these data the codes
# cover the prior, up to a small rim. Chapter 4 measures the same thing on digits, with a very different
# outcome (about 40% of prior draws in holes).
#
# ### How the decoder warps the plane into a square
#
# The decoder mean $\mu_\theta$ maps the latent plane to the data plane. Below, a grid of latent points over
# $[-3, 3]^2$ (left), coloured by position, and its image $\mu_\theta(z)$ (right), with the grid lines.

# %%
G = 31  # grid points per axis, spacing 0.2
axis_z = np.linspace(-3, 3, G, dtype=np.float32)
zz = np.stack(np.meshgrid(axis_z, axis_z, indexing="xy"), axis=-1)  # (G, G, 2)
img = to_original(vae.mean_of(vae.decode(jnp.asarray(zz.reshape(-1, 2))))).reshape(G, G, 2)
cols = np.stack([(zz[..., 0] + 3) / 6, 0.3 * np.ones(zz.shape[:2]), (zz[..., 1] + 3) / 6], axis=-1)
angles = np.linspace(0.0, 2 * np.pi, 400, endpoint=False)


def circle(radius):
    return (radius * np.c_[np.cos(angles), np.sin(angles)]).astype(np.float32)  # (400, 2)


def circle_image(radius):
    """The decoder-mean image of the circle |z| = radius, in the original units: (400, 2)."""
    return to_original(vae.mean_of(vae.decode(jnp.asarray(circle(radius)))))


fig, axes = plt.subplots(1, 2, figsize=(11, 5))
for ax, pts, xl, yl, title in [
    (axes[0], zz, "$z_1$", "$z_2$", "latent grid over $[-3, 3]^2$, circles $|z| = 1, 2$"),
    (axes[1], img, "$x_1$", "$x_2$", r"its image $\mu_\theta(z)$ (dashed: the square $[0, 10]^2$)"),
]:
    for i in range(0, G, 5):  # grid lines at z = -3, -2, ..., 3
        ax.plot(pts[i, :, 0], pts[i, :, 1], color="grey", lw=0.6)
        ax.plot(pts[:, i, 0], pts[:, i, 1], color="grey", lw=0.6)
    ax.scatter(pts[..., 0].ravel(), pts[..., 1].ravel(), s=8, c=cols.reshape(-1, 3))
    for r in (1.0, 2.0):
        c = circle(r) if ax is axes[0] else circle_image(r)
        ax.plot(*np.r_[c, c[:1]].T, color="k", lw=1.5)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title)
    ax.set_aspect("equal")
outline_square(axes[1])
fig.tight_layout()
plt.show()

print(f"the whole grid lands in x_1 in [{img[..., 0].min():.2f}, {img[..., 0].max():.2f}], "
      f"x_2 in [{img[..., 1].min():.2f}, {img[..., 1].max():.2f}]")  # fmt: skip
assert img.min() > -2.5 and img.max() < 12.5  # the whole grid lands on (roughly) the square

# %% [markdown]
# The decoder squeezes the whole plane into the square: the disc $|z| \le 2$ (86% of the prior's mass)
# already spans about the whole square (black curves), and the rest of the plane is squeezed into the soft
# band around its edges. A Gaussian in, something close to uniform out, as the map $z \mapsto 10\,\Phi(z)$
# in each coordinate would do. (Exercise 6 measures how well the map preserves mass.)
#
# **Which latent direction becomes which data direction?** The marginal likelihood $p(x)$ does not care:
# rotate the latent plane ($z \mapsto Rz$, decoder $\mu_\theta(R^\top z)$) and, since $p(z) = \mathcal{N}(0,
# I)$ is rotation-invariant, $p(x)$ is unchanged. The ELBO is *not* rotation-invariant: every exact posterior
# rotates with the model, so a Gaussian $q$ that matched one with a diagonal covariance $\Sigma$ would now
# need $R \Sigma R^\top$, which is not diagonal unless $\Sigma$ is round, and the encoder can only output
# diagonal covariances. So a VAE with a diagonal $q$ prefers orientations in which the posteriors are
# axis-aligned (Rolinek et al., 2019, show that this pushes VAEs towards PCA-like directions); only if every
# posterior were round would the ELBO be indifferent. Here the encoder's posteriors are mildly elongated
# (the median ratio of a posterior's two standard deviations, printed above, is about 1.3), so rotating this
# trained model by an angle other than a multiple of $90°$ would make its $q$ non-diagonal, and the best
# diagonal $q$ would give a lower ELBO.
#
# By how much? Suppose each exact posterior *were* the Gaussian $q(z \mid x)$, with standard deviations
# $s_1, s_2$ (section 6 finds them 0.010 nats apart on average, so this is close). Rotate by $45°$: the
# posterior's precision matrix $\Lambda = R \operatorname{diag}(s_1^{-2}, s_2^{-2}) R^\top$ has both diagonal
# entries equal to $(s_1^{-2} + s_2^{-2})/2$, the best diagonal $q$ under $\mathrm{KL}(q \,\|\, p)$ takes
# the inverses of those as its variances, and what it pays is
# $\tfrac12\big(\sum_i \log \Lambda_{ii} - \log\det \Lambda\big) = \log\frac{r + 1/r}{2}$ per point,
# with $r = s_2 / s_1$. Averaged over the training points:

# %%
r_pt = post_sd.max(axis=1) / post_sd.min(axis=1)  # (N,) each point's ratio of standard deviations
loss_45 = np.log((r_pt + 1 / r_pt) / 2)  # (N,) KL of the best diagonal q to the rotated Gaussian
print(f"ELBO lost at 45 degrees by the best diagonal q, mean over training points: {loss_45.mean():.4f} nats")
top_share = np.sort(loss_45)[-N_TRAIN // 10 :].sum() / loss_45.sum()  # share of the 10% most elongated
print(f"ratio r: median {np.median(r_pt):.2f}, 90th percentile {np.quantile(r_pt, 0.9):.2f}, "
      f"largest {r_pt.max():.1f}; the 10% most elongated posteriors carry {top_share:.0%} of the loss")  # fmt: skip
assert np.all(loss_45 >= 0) and abs(loss_45.mean() - 0.058) < 0.02  # measured: 0.058
assert abs(top_share - 0.41) < 0.12

# %% [markdown]
# About 0.06 nats per example, more than the median ratio alone suggests ($\log\frac{1.26 + 1/1.26}{2}
# \approx 0.026$), because the cost grows fast with elongation: the 10% most elongated posteriors (ratio
# above about 1.8) carry about 40% of it. Small in absolute terms, but several times the whole gap between
# this model's ELBO and its $\log p(x)$, about 0.010 nats (section 6). An orientation in which the
# posteriors are axis-aligned is worth that much to the ELBO, and to nothing else: $p(x)$ is the same for
# every rotation.
#
# ## 6. Exact log-likelihood, the ELBO and the gap
#
# With a 2-D latent, $p(x) = \int p(x \mid z)\,p(z)\,dz$ is a 2-D integral, and
# `vae_lib.quadrature_log_likelihood` computes it by the midpoint rule on a grid over $[-6, 6]^2$, without
# using the encoder. We compare two grid sizes to check that it has converged. Next to it:
#
# - the test **ELBO**, with 1000 samples of $z$ per point (`vae_lib.elbo_per_example`, which keeps each
#   point's value so that we can give standard errors);
# - the **importance-sampled** estimate $\log \frac1K\sum_k p(x, z_k) / q(z_k \mid x)$ with $K = 1000$
#   (`vae_lib.importance_log_likelihood`, the IWAE bound), which should lie between the two.
#
# Since $\log p(x) - \text{ELBO}(x) = \mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x)) \ge 0$, the difference of
# the averages is the mean $\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x))$, a measure of how far the encoder is
# from the true posterior, and a number we can now state.
#
# Every row is an average over the same 2,000 test points, and the points differ far more from each other
# than the methods do, so the useful standard errors are those of the **paired** differences (the spread
# over points of the per-point difference, divided by $\sqrt{2000}$); the standard error of each row alone
# is printed once for scale.

# %%
t0 = time.perf_counter()
logp_coarse = vae_lib.quadrature_log_likelihood(vae, x_test, num_points=150)  # (N,)
logp_fine = vae_lib.quadrature_log_likelihood(vae, x_test, num_points=300)
quad_change = float(jnp.abs(logp_fine - logp_coarse).max())

S = 1000
rec_pt, kl_pt = vae_lib.elbo_per_example(k_elbo, x_test, vae.encode, vae.decode, likelihood="gaussian",
                                         num_samples=S)  # fmt: skip
elbo_pt = np.asarray(rec_pt - kl_pt)  # (N,) each point's ELBO, a mean over S samples of z
iwae_pt = np.asarray(vae_lib.importance_log_likelihood(k_iwae, vae, x_test, num_samples=1000))
logp_pt = np.asarray(logp_fine)
truth_pt = true_log_prob(x_test_int) + LOG_DET  # log P(k) in standardized units, (N,)
gauss_pt = np.asarray(vae_lib.gaussian_log_prob(x_test, x_train.mean(0), jnp.log(jnp.diag(cov))))


def se(a):
    """Standard error of the mean of a (N,) array of per-point values."""
    return float(np.std(a, ddof=1) / math.sqrt(len(a)))


rows = [
    ("best single Gaussian", gauss_pt),
    (f"ELBO, {S} samples of z", elbo_pt),
    ("importance sampled, K = 1000", iwae_pt),
    ("log p(x), quadrature 300 x 300", logp_pt),
    ("true distribution, log P(k)", truth_pt),
]
print(f"{'test set, nats per example':<34}{'standardized':>13}{'original units':>16}{'minus log p(x)':>22}")
for name, v in rows:
    d = v - logp_pt
    diff = "" if v is logp_pt else f"{d.mean():+.4f} +- {se(d):.4f}"
    print(f"{name:<34}{v.mean():>13.4f}{v.mean() - LOG_DET:>16.4f}{diff:>22}")
print(f"(standard error of one row alone: {se(logp_pt):.3f}, from the spread of the test points)")
logp, elbo, iwae, truth = logp_pt.mean(), elbo_pt.mean(), iwae_pt.mean(), truth_pt.mean()
gap, gap_se = logp - elbo, se(logp_pt - elbo_pt)
print(f"\ngap log p(x) - ELBO = mean KL(q(z|x) || p(z|x)) = {gap:.4f} +- {gap_se:.4f} nats per example")
print(f"quadrature: largest change from 150 to 300 points per axis: {quad_change:.1e} nats")
print(
    f"log p - IWAE = {logp - iwae:.1e} +- {se(logp_pt - iwae_pt):.1e} nats; ({time.perf_counter() - t0:.1f} s)"
)

# %%
assert quad_change < 1e-3  # the quadrature has converged
assert gap > 4 * gap_se and abs(gap - 0.010) < 0.004  # log p(x) > ELBO, many standard errors apart
assert (
    elbo + 4 * se(iwae_pt - elbo_pt) < iwae < logp + 3 * se(logp_pt - iwae_pt)
)  # ELBO <= IWAE <= log p(x), up to MC error
assert abs(logp - iwae) < 0.001  # with K = 1000, importance sampling is nearly exact here
assert abs(logp + 2.749) < 0.006 and abs(elbo + 2.759) < 0.006
assert abs(truth + 2.725) < 0.003 and abs(truth - LOG_DET + 4.976) < 0.003
assert abs(truth - gauss_pt.mean() - 0.116) < 0.01  # what a latent can gain at most, in nats per example
assert abs(truth - logp - 0.024) < 0.008 and truth - logp > 3 * se(truth_pt - logp_pt)
assert abs(logp - LOG_DET + 5.00) < 0.01

# %% [markdown]
# What the table says, in nats per example on the 2,000 test points:
#
# - The ELBO, about $-2.759$, is below the exact $\log p(x) \approx -2.749$; the **gap**, the mean
#   $\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x))$, is about 0.010 nats, with a standard error near 0.001.
#   The encoder's Gaussian is a good approximation of the true posterior here. On images the gap is
#   usually larger (Chapter 4 measures it on digits); with a 2-D latent, this is how to measure it exactly.
# - Importance sampling with 1000 samples closes the whole gap: it lies about 0.010 nats above the ELBO
#   and agrees with $\log p(x)$ within its Monte Carlo error (about $3 \cdot 10^{-4}$ nats): it is a lower
#   bound on $\log p(x)$ only in expectation, and with $K = 1000$ it is all but exact here.
# - The model is about 0.024 nats (standard error 0.004) below the **true** distribution (about
#   $-2.725$; the dequantized density is $P(k)$ on each cell, so this is $\mathbb{E}\log P(k)$ plus
#   $\sum_i \log s_i$). The best Gaussian is about 0.12 nats below the truth, which is all that any model,
#   with a latent variable or not, could add to it on these data in expectation (no density scores higher
#   than the true one on average); the VAE gets about four fifths of it.
# - In the original units, subtract $\sum_i \log s_i \approx 2.25$: the model's $\log p(y)$ is about
#   $-5.00$ nats per example, against $-4.976$ for $\log P(k)$ of the true distribution. By the Jensen
#   bound of section 2, the model's own log-*probability* of the lattice test sites is at least the
#   *expected* dequantized value. The table's number uses one draw of $v$ per point; the cell below
#   redraws $v$ four more times to show how close one draw is to that expectation. Exercise 2 computes the
#   model's probability of a site exactly.

# %%
k_sites = jax.random.split(k_deq_more, 4)
redraws = [float(vae_lib.quadrature_log_likelihood(vae, (dequantize(k, x_test_int) - mean) / std,
                                                   num_points=150).mean()) for k in k_sites]  # fmt: skip
redraws = np.array([logp, *redraws]) - LOG_DET
print("mean log p(y) of the test sites, original units, five draws of v:", np.round(redraws, 4))
print(f"their mean {redraws.mean():.4f}, spread (sd) {redraws.std(ddof=1):.4f}")
assert redraws.std(ddof=1) < 0.01 and abs(redraws.mean() + 5.00) < 0.01

# %% [markdown]
# The five draws have a standard deviation of about 0.003 nats: the one-draw number of the table estimates
# the expectation that the bound is about to within a few thousandths of a nat.
#
# ### The model's density next to the data
#
# The same quadrature on a grid of points gives the model's density everywhere, in the original units (the
# Jacobian term included), next to the true density of the dequantized data, which is $P(k)$ on each unit
# cell. Both panels use the same colour scale, shown by the colour bar, so equal colours mean equal
# densities.


# %%
def model_log_density(y):
    """log p(y) of the VAE in the original units, y (G, 2) -> (G,)."""
    return vae_lib.quadrature_log_likelihood(vae, (jnp.asarray(y) - mean) / std, num_points=150) - LOG_DET


def true_log_density(y):
    """log density of the dequantized data in the original units: P(k) on the cell around k."""
    return true_log_prob(np.round(y))


side = np.linspace(-4.0, 14.0, 70)
grid_pts = np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2).astype(np.float32)
peak = max(
    float(np.exp(np.max(model_log_density(grid_pts)))), float(np.exp(true_log_prob(np.array([[5, 5]]))[0]))
)
levels = np.linspace(0.0, 1.02 * peak, 13)  # shared by both panels, above both densities' largest value
box = dict(xlim=(-4.0, 14.0), ylim=(-4.0, 14.0), num_points=70, levels=levels)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
y_show = to_original(x_test)
axes[0].scatter(y_show[:, 0], y_show[:, 1], s=2, alpha=0.5)
axes[0].set_title("test data (dequantized)")
axes[0].set_xlabel("$x_1$")
axes[0].set_ylabel("$x_2$")
density_contours(model_log_density, ax=axes[1], title="VAE density p(x), by quadrature", **box)
density_contours(true_log_density, ax=axes[2], title="true density of the dequantized data", **box)
for ax in axes:
    outline_square(ax)
    ax.set_xlim(-4, 14)
    ax.set_ylim(-4, 14)
    ax.set_aspect("equal")
fig.colorbar(ScalarMappable(Normalize(levels[0], levels[-1]), cmap="viridis"), ax=axes[1:],
             label="density (per unit area, original units)", shrink=0.9)  # fmt: skip
plt.show()

# %% [markdown]
# The VAE's density is a smooth square plateau with soft shoulders; the true one is the same plateau made
# of unit tiles. A smooth decoder cannot draw the tile edges, which is part of the difference of about 0.02
# nats between the two.
#
# ## Summary
#
# - The article's data lie on the integer lattice (227 distinct points among 10,000). A continuous density
#   on them has an unbounded likelihood; dequantization with $U(-\tfrac12, \tfrac12)$ noise makes the problem
#   well posed, its expected log-likelihood is a lower bound on the log-probability of the lattice points,
#   and the rounding and the dequantization together add $\approx 1/6$ to the noise variance.
# - With a learned observation variance started at 1, the VAE collapsed onto the best single Gaussian
#   (KL $\approx 0$) in three runs out of three. Started at 0.02 (one run), the same model used its latent
#   and reached a higher ELBO: the collapse is an optimization failure, not the ELBO's optimum.
# - A fixed variance $\sigma^2$ is a KL weight $\beta = \sigma^2$ (for a unit-variance decoder);
#   $\sigma^2 = 0.02$ made the model use $z$ (KL $\approx 3.8$ nats).
# - The trained model's samples look like the data, its aggregate posterior matches the prior's first two
#   moments, and its decoder squeezes the Gaussian plane into a square. By Chapter 1's hole fraction, prior
#   draws fall in holes about as rarely as the aggregate posterior's own draws (about 2.5% against 1.5%):
#   on these data the codes cover the prior (Chapter 4 finds the opposite on digits).
# - Measured, in nats per example on test data (standardized units): ELBO $\approx -2.759$, exact
#   $\log p(x) \approx -2.749$ by quadrature (converged), importance sampling ($K = 1000$) equal to it
#   within its Monte Carlo error, so the mean $\mathrm{KL}(q(z\mid x)\,\|\,p(z\mid x)) \approx 0.010$
#   (standard error 0.001); the true distribution scores $-2.725$.
#
# ## Exercises
#
# ### Exercise 1: the collapsed model is a maximum-likelihood Gaussian
#
# Show that a VAE whose KL term is zero has $q(z \mid x) = p(z)$ for every $x$, and that its ELBO is then
# $\mathbb{E}_{p(z)}\log p(x \mid z)$. If moreover the decoder ignores $z$, what is the best ELBO it can
# reach, and how does it compare with $-(1 + \log 2\pi) \approx -2.838$ on standardized data?

# %% [markdown]
# <details><summary>Solution</summary>
#
# $\mathrm{KL}(q(z\mid x)\,\|\,p(z)) = 0$ forces $q(z \mid x) = p(z)$, so the reconstruction term becomes
# $\mathbb{E}_{p(z)}\log p(x \mid z)$. A decoder that ignores $z$ outputs a constant $(\mu, \sigma^2)$, and
# the ELBO is the average log-density of one diagonal Gaussian, maximized by the sample mean and variance:
# $-\tfrac12\sum_i (1 + \log 2\pi\sigma_i^2)$, which is $-(1 + \log 2\pi) \approx -2.838$ for standardized
# data (unit variances). On the test data the fitted Gaussian scores $-2.841$ (section 3; the test points'
# variance is not exactly 1), and the three collapsed runs reached it to within 0.01.
#
# </details>
#
# ### Exercise 2: the model's probability of a lattice point
#
# The VAE gives the lattice site $k$ the probability $P_{\text{VAE}}(k) = \int_{\text{cell}(k)} p(y)\,dy$.
# Compute it for 100 test sites with a $6 \times 6$ midpoint rule inside each cell, check Jensen's
# inequality $\log P_{\text{VAE}}(k) \ge$ the average of $\log p(y)$ over the cell, and compare with the
# true $\log P(k)$.

# %% [markdown]
# <details><summary>Solution</summary>
#
# The cell has area 1 in the original units, so $P_{\text{VAE}}(k)$ is the average of $p(y)$ over the cell;
# a log of an average is at least the average of logs, exactly, for any set of points. The cell below
# finds that the bound costs about 0.016 nats per site (the model's density varies a little across a
# cell), and that on these 100 sites the VAE's mean log-probability differs from the truth's by about
# $-0.006 \pm 0.011$ nats (paired standard error), zero within its uncertainty: the smooth model loses to
# the truth on the dequantized *density* (section 6) mostly because it cannot draw the tile edges, which
# matter for the density but not for the probability of a whole cell.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 2: try it yourself first, then run this cell.
sub = (np.arange(6) + 0.5) / 6 - 0.5  # midpoints of a 6 x 6 split of the cell
offsets = np.stack(np.meshgrid(sub, sub, indexing="ij"), axis=-1).reshape(-1, 2)  # (36, 2)
sites_100 = x_test_int[:100]  # (100, 2) lattice sites
cell_points = (sites_100[:, None, :] + offsets[None]).reshape(-1, 2).astype(np.float32)  # (100 * 36, 2)
log_p_cell = np.asarray(model_log_density(cell_points)).reshape(100, 36)
log_P_vae = np.asarray(jax.nn.logsumexp(log_p_cell, axis=1)) - math.log(36)  # log of the cell average
mean_log_p = log_p_cell.mean(axis=1)
true_sites = true_log_prob(sites_100)
print(f"mean over 100 sites: log P_VAE(k) = {log_P_vae.mean():.4f}, cell-average log p = "
      f"{mean_log_p.mean():.4f}, true log P(k) = {true_sites.mean():.4f}")  # fmt: skip
jensen_gap = log_P_vae.mean() - mean_log_p.mean()
vs_truth = log_P_vae - true_sites  # (100,) per site
print(f"Jensen gap {jensen_gap:.4f}; log P_VAE - log P_true = {vs_truth.mean():+.4f} +- {se(vs_truth):.4f}")
assert np.all(log_P_vae >= mean_log_p - 1e-5)  # Jensen, site by site
assert abs(jensen_gap - 0.016) < 0.008
assert abs(vs_truth.mean()) < 0.02

# %% [markdown]
# ### Exercise 3: the gap, one point at a time
#
# For the test point nearest the centre of the square and the one farthest out, compute the exact
# posterior $p(z \mid x) = p(x \mid z)\,p(z) / p(x)$ on a grid of latents, draw it next to the encoder's
# $q(z \mid x)$, and compute $\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x))$ on the grid. Check that it equals
# $\log p(x) - \text{ELBO}(x)$, with $\log p(x)$ from `quadrature_log_likelihood` and the ELBO a Monte Carlo
# estimate.

# %% [markdown]
# <details><summary>Solution</summary>
#
# On a grid $z_g$ with cell area $\Delta$, $\log p(z_g \mid x) = \log p(x \mid z_g) + \log p(z_g) - \log
# p(x)$ and $\mathrm{KL} \approx \sum_g q(z_g \mid x)\,[\log q(z_g \mid x) - \log p(z_g \mid x)]\,\Delta$.
# Each point's grid is centred on the encoder's mean and spans 6 of its standard deviations each way, so it
# holds all of $q$; the two panels therefore have **different zooms** (their axes show the ranges). The
# ELBO uses 100,000 samples of $z$ per point, so its standard error is small; `vae_lib` supplies every
# density. Near the centre the exact posterior is almost Gaussian and the gap is below 0.01 nats. Far
# outside the square, where the decoder saturates, the exact posterior is skewed and stretched along the
# direction the decoder flattens; the Gaussian $q$ cannot follow it, and the gap is about a hundred times
# larger, about half a nat. The average gap of section 6 is only about 0.010 nats and no point's gap is
# negative, so by Markov's inequality at most $0.010 / 0.47 \approx 2\%$ of points can have a gap this
# large.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 3: try it yourself first, then run this cell.
idx_two = np.argsort(np.abs(x_test).max(axis=1))[
    [0, -1]
]  # the test point nearest the centre, the farthest out
x_two = jnp.asarray(x_test[idx_two])  # (2, 2)
M, S_ONE = 121, 100_000


@jax.jit
def posterior_check(key, x, log_px):
    """For points x (P, 2): the exact posterior and q(z|x) on a local grid, KL(q || p(z|x)) on that grid,
    and a Monte Carlo ELBO with S_ONE samples and its standard error."""
    q_mean, q_logvar = vae.encode(x)  # (P, 2) each
    half = 6.0 * jnp.exp(0.5 * q_logvar)  # the grid spans q_mean +- 6 posterior standard deviations
    unit = jnp.linspace(-1.0, 1.0, M)
    box = jnp.stack(jnp.meshgrid(unit, unit, indexing="xy"), axis=-1).reshape(-1, 2)  # (G, 2)
    z = q_mean[:, None, :] + box[None] * half[:, None, :]  # (P, G, 2)
    log_cell = jnp.log(2.0 * half / (M - 1)).sum(axis=-1, keepdims=True)  # (P, 1)
    log_post = (vae_lib.log_likelihood(x[:, None, :], vae_lib.decode_samples(vae.decode, z), "gaussian")
                + vae_lib.standard_normal_log_prob(z) - log_px[:, None])  # fmt: skip  # log p(z|x), (P, G)
    log_q = vae_lib.gaussian_log_prob(z, q_mean[:, None, :], q_logvar[:, None, :])  # (P, G)
    w = jnp.exp(log_q + log_cell)  # q(z_g|x) times the cell area
    kl_grid = jnp.sum(w * (log_q - log_post), axis=1)
    z_s = vae_lib.reparameterize(key, q_mean, q_logvar, num_samples=S_ONE)  # (S, P, 2)
    rec_s = vae_lib.log_likelihood(
        x, vae_lib.decode_samples(vae.decode, z_s), "gaussian"
    )  # (S, P): log p(x | z_s)
    elbo_mc = rec_s.mean(axis=0) - vae_lib.kl_standard_normal(q_mean, q_logvar)
    return z, log_post, log_q, w.sum(axis=1), kl_grid, elbo_mc, rec_s.std(axis=0) / math.sqrt(S_ONE)


z_loc, log_post, log_q, q_mass, kl_grid, elbo_two, se_two = posterior_check(k_ex3, x_two, logp_fine[idx_two])
gap_two = logp_fine[idx_two] - elbo_two
for i, name in enumerate(["centre", "edge"]):
    print(
        f"{name}: x = {np.round(to_original(x_two[i]), 2)}, log p(x) - ELBO = {float(gap_two[i]):.4f}"
        f" (+- {float(se_two[i]):.4f}), KL(q || p(z|x)) on the grid = {float(kl_grid[i]):.4f}"
    )
assert np.allclose(q_mass, 1.0, atol=1e-3)  # the box holds q(z|x)
assert np.all(np.abs(np.asarray(gap_two - kl_grid)) < 4 * np.asarray(se_two) + 1e-3)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for i, (ax, name) in enumerate(zip(axes, ["near the centre", "far from the centre"], strict=True)):
    zx, zy = (np.asarray(z_loc[i, :, j]).reshape(M, M) for j in (0, 1))
    ax.contourf(zx, zy, np.exp(np.asarray(log_post[i])).reshape(M, M), levels=10, cmap="viridis")
    ax.contour(zx, zy, np.exp(np.asarray(log_q[i])).reshape(M, M), levels=5, colors="white", linewidths=0.8)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(f"x {name}: p(z|x) filled, q(z|x) white\n(own zoom: q's mean $\\pm$ 6 sd)", fontsize=10)
fig.tight_layout()
plt.show()

ratio = float(kl_grid[1] / kl_grid[0])
print(f"edge / centre: {ratio:.0f} times; Markov bound on the share of points with a gap that large: "
      f"{gap / float(kl_grid[1]):.1%}")  # fmt: skip
assert abs(float(kl_grid[0]) - 0.0045) < 0.004 and abs(float(kl_grid[1]) - 0.47) < 0.15
assert 40 < ratio < 300  # measured: about 100

# %% [markdown]
# ### Exercise 4: a fixed variance is a KL weight
#
# Check section 4's identity on the trained model: build a copy of `vae` whose decoder has a fixed unit
# variance (`obs_logvar=0.0`) and the same weights, compute `vae_lib.elbo(..., beta=0.02)` with it, and
# recover the ELBO of `vae` (with $\sigma^2 = 0.02$, the same key) from its `objective` by the affine map of
# section 4. Write down the constant.

# %% [markdown]
# <details><summary>Solution</summary>
#
# With $D = 2$ data dimensions, $\log \mathcal{N}(x; \mu, \sigma^2 I) = \frac{1}{\sigma^2}\big(\log
# \mathcal{N}(x; \mu, I) + \tfrac D2 \log 2\pi\big) - \tfrac D2 \log(2\pi\sigma^2)$, so
# $\text{ELBO}_{\sigma^2} = \frac{1}{\sigma^2}\,\text{objective}_{\beta = \sigma^2} + \frac{D}{2\sigma^2}\log
# 2\pi - \frac D2 \log(2\pi\sigma^2)$, where the objective is that of the unit-variance decoder. With the
# same key both use the same $z$, so the identity holds to rounding error.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 4: try it yourself first, then run this cell.
k_unit_init, k_ex4_z = jax.random.split(k_ex4)
unit_vae = toy_vae(k_unit_init, obs_logvar=0.0)  # its initial weights are overwritten next
nnx.update(unit_vae, nnx.state(vae, nnx.Param))
x_ex = jnp.asarray(x_test)
weighted = vae_lib.elbo(k_ex4_z, x_ex, unit_vae.encode, unit_vae.decode, likelihood="gaussian", beta=OBS_VAR)
# the same key on purpose: both use the same draws of z
plain = vae_lib.elbo(k_ex4_z, x_ex, vae.encode, vae.decode, likelihood="gaussian")
D = 2
recovered = float(weighted.objective) / OBS_VAR + D / (2 * OBS_VAR) * math.log(2 * math.pi) \
    - D / 2 * math.log(2 * math.pi * OBS_VAR)  # fmt: skip
print(
    f"ELBO with sigma^2 = {OBS_VAR}: {float(plain.elbo):.5f}; recovered from the beta-objective: {recovered:.5f}"
)
assert abs(recovered - float(plain.elbo)) < 1e-3

# %% [markdown]
# ### Exercise 5: a square, not a Gaussian blob
#
# The excess kurtosis of a coordinate, $\mathbb{E}[(x - \bar x)^4] / \operatorname{Var}(x)^2 - 3$, is 0 for
# a Gaussian (such as the collapsed model) and $-1.2$ for a uniform. Compute it for each coordinate of the
# training data and of 10,000 samples $x \sim p(x \mid z)$, $z \sim p(z)$, from the fixed-variance model.
# What do you expect for the data, whose uniform part (variance $100/12$) is blurred by noise of variance
# $1 + 1/6$?

# %% [markdown]
# <details><summary>Solution</summary>
#
# For a sum of independent parts, cumulants add: the fourth cumulant of the uniform part is
# $-1.2 \cdot (100/12)^2$, the noise parts are Gaussian (cumulant 0) or nearly so (the triangular $e$,
# $-0.6 \cdot (1/6)^2$, negligible), and the variance is $100/12 + 7/6$; so the data's excess kurtosis is
# about $-1.2 \cdot (100/12)^2 / (100/12 + 7/6)^2 \approx -0.92$. The cell below measures about $-0.91$ for
# the data and about $-0.87$ for the model's samples (each coordinate printed): clearly square-like,
# with edges a little softer than the data's.
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 5: try it yourself first, then run this cell.
def excess_kurtosis(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    return (x**4).mean(axis=0) / (x**2).mean(axis=0) ** 2 - 3.0


k_z5, k_eps5 = jax.random.split(k_ex5)
m_big, lv_big = vae.decode(jax.random.normal(k_z5, (10_000, 2)))
x_big = m_big + jnp.exp(0.5 * lv_big) * jax.random.normal(k_eps5, m_big.shape)
predicted = -1.2 * (100 / 12) ** 2 / (100 / 12 + 7 / 6) ** 2
kurt_data, kurt_model = excess_kurtosis(x_train), excess_kurtosis(x_big)
print(f"predicted for the data: {predicted:.3f}")
print(
    "excess kurtosis per coordinate: data", np.round(kurt_data, 2), " model samples", np.round(kurt_model, 2)
)
assert np.all(np.abs(kurt_data - predicted) < 0.03)
assert np.all(np.abs(kurt_model + 0.87) < 0.08)  # measured: -0.86 and -0.87

# %% [markdown]
# ### Exercise 6: does the decoder preserve mass?
#
# The disc $|z| \le r$ holds $1 - e^{-r^2/2}$ of the prior's mass. If the decoder mapped the prior onto a
# uniform distribution over the square, the image of that disc would cover the same fraction of the
# square's area (100). Compute the area enclosed by the image of the circle $|z| = 1$ (the `circle_image`
# of section 5) with the shoelace formula, $A = \tfrac12\,|\sum_i x_i y_{i+1} - x_{i+1} y_i|$, and compare.

# %% [markdown]
# <details><summary>Solution</summary>
#
# The cell below finds that the disc $|z| \le 1$, which holds 39% of the prior's mass, lands on about 38%
# of the square's area: close to mass-preserving, as a map onto a uniform distribution must be. (For
# $|z| \le 2$, 86% of the mass, the image already covers about the whole square's area, because the
# model's density spills over the edges, as section 6 showed.)
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 6: try it yourself first, then run this cell.
def image_area(radius):
    """Area enclosed by the image of the circle |z| = radius (shoelace formula), in the original units."""
    p = circle_image(radius)
    return 0.5 * abs(p[:, 0] @ np.roll(p[:, 1], -1) - p[:, 1] @ np.roll(p[:, 0], -1))


for r in (1.0, 2.0):
    print(f"disc |z| <= {r:.0f}: prior mass {1 - math.exp(-(r**2) / 2):.3f}, "
          f"its image covers {image_area(r) / 100:.3f} of the square's area")  # fmt: skip
assert abs(image_area(1.0) / 100 - 0.38) < 0.02 and 1.0 < image_area(2.0) / 100 < 1.15

# %% [markdown]
# ## Appendix A: what the article's code gets wrong
#
# Section 4 of the article, read line by line. Its model is a Keras `Model` with `Encoder`, `Decoder` and
# `Generator` layers; here is what is wrong, and what this chapter does instead.
#
# | the article's code | the problem | here |
# |---|---|---|
# | `layers.Dense(128)(inputs)` inside `Encoder.call`, `Decoder.call`, `Generator.call` | new, randomly initialised layers on every call: the weights are never the same twice and nothing can be trained | layers built once in `__init__` (`vae_lib.mlp_vae`), trained by `vae_lib.fit` |
# | `z = layers.KLDivergence(log_temperature=1.)([z_mean, z_log_var, noise])` | there is no such layer: Keras has `KLDivergence` only as a loss and a metric between two discrete distributions; there is no sampling step at all | the reparameterization $z = \mu + e^{\log\sigma^2/2}\,\varepsilon$ (`vae_lib.reparameterize`) |
# | `noise = layers.Input(shape=(2,))` inside `call` | a symbolic placeholder, not random noise | $\varepsilon \sim \mathcal{N}(0, I)$ from an explicit JAX key |
# | `categorical_crossentropy(x, decoder_mean, from_logits=True)` | treats the two real coordinates as logits of a 2-class softmax and the data (partly negative, 7% of entries $\le 0$, and not summing to 1) as class probabilities: not a likelihood of a 2-D point | a Gaussian log-density $\log \mathcal{N}(x; \mu_\theta(z), \sigma^2 I)$ |
# | `kl_loss = decoder_mean * K.log(x) - decoder_mean - 1.` | not a KL divergence: it uses the data and the decoder output instead of the encoder's mean and variance, takes `log` of data that are zero or negative (NaN, $-\infty$), and `K` is never imported | $\mathrm{KL}(q\,\|\,p) = -\tfrac12\sum_j (1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2)$ (`vae_lib.kl_standard_normal`) |
# | rounded data fitted with a continuous model | ill-posed, section 2 | dequantization |
# | `x = x / 2.` then `np.expand_dims(x, axis=2)` | an arbitrary rescaling (not a standardization) and a third axis of size 1 for no reason | standardize each coordinate; data stay `(N, 2)` |
# | `generate_images` feeds $\mathcal{N}(0, I)$ noise to `model.predict` | `predict` runs the VAE's `call`, which starts with the **encoder**: the noise is treated as data; the `Generator` is never used (and ignores its input) | $z \sim p(z)$ through the **decoder** (section 5) |
# | `generated_images.reshape(num_images, 2, 2)`, `imshow` | 16 outputs of 2 numbers are 32 numbers, which cannot fill $16 \times 2 \times 2 = 64$; and 2-D points are not images | scatter plots of points |
# | `generate_images(vae, test_input_data, num_images)`, `display`, `cmap='Gray'` | `test_input_data`, `display` and `matplotlib` are never defined or imported; `'Gray'` is not a Matplotlib colormap (it is `'gray'`) | a tested notebook that runs top to bottom |
#
# The claims that can be run without TensorFlow, run:

# %%
x_article = x_train_int / 2.0  # the article's preprocessing
with np.errstate(divide="ignore", invalid="ignore"):
    log_x = np.log(x_article)  # what its "KL" term computes
print(f"data entries <= 0: {(x_article <= 0).mean():.1%};  log gives -inf for {np.isneginf(log_x).sum()} "
      f"and NaN for {np.isnan(log_x).sum()} of {x_article.size} entries")  # fmt: skip
assert abs((x_article <= 0).mean() - 0.07) < 0.005 and np.isnan(log_x).sum() > 0
try:
    np.zeros((16, 2)).reshape(16, 2, 2)  # 16 generated 2-D points, "as 2x2 images"
except ValueError as e:
    print("reshape:", e)
try:
    plt.get_cmap("Gray")
except ValueError as e:
    print("colormap:", str(e).split(".")[0])

# %% [markdown]
# ## Appendix B: $P(k)$ in closed form
#
# The integral of section 1 has a closed form. With $a = (k - \tfrac12)/\sigma$, $b = (k + \tfrac12)/\sigma$,
# $L = 10/\sigma$ and $G(t) = t\,\Phi(t) + \varphi(t)$, an antiderivative of $\Phi$ ($\varphi$ is the
# standard normal density; $G' = \Phi + t\varphi - t\varphi = \Phi$),
#
# $$
# P(k) = \frac{\sigma}{10}\Big[G(b) - G(b - L) - G(a) + G(a - L)\Big].
# $$
#
# Above $k = 5$ the four terms nearly cancel; the symmetry $P(k) = P(10 - k)$ lets us evaluate the side where
# they do not. The closed form agrees with the midpoint rule of section 1 to about $10^{-5}$ (relative), far
# below anything the chapter compares:


# %%
def _antiderivative_of_phi(t):
    """G(t) = t Phi(t) + phi(t), so that G' = Phi (float64)."""
    return t * 0.5 * (1.0 + _erf(t / math.sqrt(2.0))) + np.exp(-0.5 * t**2) / math.sqrt(2.0 * math.pi)


def true_prob_1d_closed(k, noise=NOISE, width=10.0):
    """P(round(u + n) = k) in closed form: integers (...) -> (...), float64."""
    k = np.asarray(k, dtype=np.float64)
    k = np.minimum(k, width - k)  # P(k) = P(width - k) by symmetry; this side avoids cancellation
    a, b, L = (k - 0.5) / noise, (k + 0.5) / noise, width / noise
    g = _antiderivative_of_phi
    return noise / width * (g(b) - g(b - L) - g(a) + g(a - L))


rel_err = np.abs(true_prob_1d_closed(ks) / true_prob_1d(ks) - 1.0)
print(f"largest relative difference, closed form vs midpoint rule, k in [-6, 16]: {rel_err.max():.1e}")
assert rel_err.max() < 3e-5

# %% [markdown]
# ## References
#
# - An untitled Chinese-language article on variational autoencoders, the text this course grew out of
#   (sections: background, core concepts, algorithm and mathematical model, a TensorFlow code example,
#   future trends and challenges, FAQ). This chapter uses its 2-D data generator and corrects its code
#   (Appendix A).
# - D. P. Kingma and M. Welling (2014). *Auto-Encoding Variational Bayes.* ICLR. arXiv:1312.6114.
# - D. J. Rezende, S. Mohamed and D. Wierstra (2014). *Stochastic Backpropagation and Approximate
#   Inference in Deep Generative Models.* ICML. arXiv:1401.4082.
# - D. P. Kingma and M. Welling (2019). *An Introduction to Variational Autoencoders.* Foundations and
#   Trends in Machine Learning 12(4). arXiv:1906.02691.
# - B. Uria, I. Murray and H. Larochelle (2013). *RNADE: The real-valued neural autoregressive
#   density-estimator.* NeurIPS (adding uniform noise to discrete data).
# - L. Theis, A. van den Oord and M. Bethge (2016). *A note on the evaluation of generative models.* ICLR
#   (dequantization and the bound on the discrete log-likelihood).
# - Y. Burda, R. Grosse and R. Salakhutdinov (2016). *Importance Weighted Autoencoders.* ICLR.
#   arXiv:1509.00519.
# - S. R. Bowman, L. Vilnis, O. Vinyals, A. M. Dai, R. Jozefowicz and S. Bengio (2016). *Generating
#   Sentences from a Continuous Space.* CoNLL (posterior collapse, KL annealing).
# - J. Lucas, G. Tucker, R. Grosse and M. Norouzi (2019). *Don't Blame the ELBO! A Linear VAE Perspective
#   on Posterior Collapse.* NeurIPS.
# - M. Rolinek, D. Zietlow and G. Martius (2019). *Variational Autoencoders Pursue PCA Directions (by
#   Accident).* CVPR (why a diagonal posterior breaks the rotation symmetry).
# - I. Higgins et al. (2017). *beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
#   Framework.* ICLR (the KL weight $\beta$).

# %%
import flax  # noqa: E402

print(
    f"python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}"
)
print(f"chapter ran in {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
      f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
