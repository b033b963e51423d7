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
# # Chapter 7 — Rate, distortion and posterior collapse
#
# The ELBO has two terms, and so far we have only ever looked at their sum. This chapter takes them apart.
# The reconstruction term and the KL term are the **distortion** and the **rate** of a lossy code for the
# data (Alemi et al., 2018), and weighting them differently (the $\beta$ of a $\beta$-VAE) moves a model
# along a curve that trades one for the other. At one end of that curve the code carries almost nothing:
# the **posterior collapse** that users of VAE codebases keep asking about. The article this course grew
# out of only says, among a VAE's challenges, that the diversity and generalization of its generative model
# "are affected by the added random noise"; here we measure what the KL term does instead.
#
# **What you will learn**
#
# - The ELBO as $-(D + R)$, distortion plus rate; a $\beta$ sweep on the digits traces the rate–distortion
#   curve, and what each end of it looks like (reconstructions, samples).
# - The rate split by "ELBO surgery" into the information the code carries about the digit and the
#   distance from the aggregate posterior to the prior, $R = I(x; z) + \mathrm{KL}(q(z) \,\|\, p(z))$, and
#   what the second part has to do with the **holes** of Chapters 1 and 4.
# - Posterior collapse made to happen on digits, measured (KL per latent dimension, active units), and the
#   three standard remedies tried with `vae_lib.fit`'s hooks: KL warm-up, free bits and a lower $\beta$.
#   What they do, what they cannot do, and the fix that the measurements point to.
# - A prior learned with the model (the VampPrior) that shrinks $\mathrm{KL}(q(z) \,\|\, p(z))$ and the
#   prior holes, and what it buys in test $\log p(x)$ at an equal training budget.
#
# **Prerequisites**: Chapter 2 (the ELBO, the Gaussian KL), Chapter 4 (VAEs on the digits, binarization,
# `importance_log_likelihood`, ELBO surgery, the hole fraction). Chapter 6 (the linear VAE is
# probabilistic PCA) helps with section 3 but is not required. Notation as before: encoder
# $q_\phi(z \mid x) = \mathcal{N}(\mu(x), \operatorname{diag} \sigma^2(x))$, decoder $p_\theta(x \mid z)$,
# prior $p(z)$.
#
# **Units and error bars.** Everything is in **nats per digit**: summed over the 784 pixels and the
# latent dimensions, averaged over digits. A "$\pm$" is one standard error over the 1,000 test digits; a
# difference between two models is computed digit by digit on the same digits with the same random draws
# (a *paired* difference, whose standard error is much smaller than either model's). Each model is trained
# **once**, from one seed, so no error bar here covers the spread between training runs; the end of the
# chapter lists which claims that leaves resting on one run.

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
from vae_lib.diagnostics import active_units, elbo_surgery, encode_dataset, hole_fraction, kl_per_dimension
from vae_lib.plotting import image_grid
from vae_lib.priors import VampPrior

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()

key = jax.random.key(7)  # the chapter's one seed; every random draw below uses a key split from it
(k_bin_test, k_bin_train, k_init, k_fit, k_eval, _, k_surgery, k_draws, k_samples, k_iwae, k_gauss,
 _, k_ex) = jax.random.split(key, 13)  # fmt: skip

LATENT, HIDDEN, EPOCHS = 16, (256,), 10  # every model of the chapter: 784-256-16, 10 epochs of 31 steps
digits = load_mnist5k()
x_train, y_train, x_test, y_test = digits
x_test_bin = binarize(k_bin_test, x_test)  # one fixed binarization for evaluation (Chapter 4)
x_train_bin = binarize(k_bin_train, x_train)  # a fixed binarization of the training digits, for their codes
N_TEST = len(x_test)


def se(a):
    """Standard error of the mean over digits."""
    a = np.asarray(a, np.float64)
    return a.std(ddof=1) / math.sqrt(a.size)


def per_digit_elbo(key, model, x, num_samples=10):
    """Distortion D(x) and rate R(x) of each digit, ``(N,)`` each: ``D = -E_q log p(x|z)``, ``R = KL``."""
    rec, kl = vae_lib.elbo_per_example(
        key, x, model.encode, model.decode, likelihood=model.likelihood, num_samples=num_samples,
        log_prior=model.log_prior,
    )  # fmt: skip
    return -np.asarray(rec, np.float64), np.asarray(kl, np.float64)


# %% [markdown]
# ## 1. The ELBO is minus distortion minus rate
#
# Average the ELBO over the data distribution $q(x)$ (here the training or test digits) and name its two
# terms:
#
# $$
# \text{ELBO} = -\big(D + R\big), \qquad
# D = -\,\mathbb{E}_{q(x)} \mathbb{E}_{q_\phi(z \mid x)} \log p_\theta(x \mid z), \qquad
# R = \mathbb{E}_{q(x)}\, \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big).
# $$
#
# $D$ is the **distortion**: how many nats it still takes to describe a digit once its code is known.
# $R$ is the **rate**: how many nats the code costs, relative to the prior (in the "bits-back" sense: an
# encoder that sends $z \sim q_\phi(z \mid x)$ with a code built for $p(z)$ pays $R$ on average). Alemi et
# al. (2018) show that for any encoder and decoder, $H - D \le I_q(x; z) \le R$, with $H$ the entropy of
# the data and $I_q$ the mutual information between a digit and its code under $q(x)\,q_\phi(z \mid x)$. So
# $D + R \ge H$: no model gets below the line $D + R = H$, and the ELBO, $-(D + R)$, is at most $-H$.
#
# Many different $(R, D)$ pairs have the same ELBO. The $\beta$-VAE objective (Higgins et al., 2017)
# minimizes $D + \beta R$ instead: $\beta > 1$ buys a cheaper code with more distortion, $\beta < 1$ the
# reverse. At the best $(R, D)$ for a given $\beta$ the achievable curve $D(R)$ has slope $-\beta$, so a
# sweep over $\beta$ traces the curve. Only $\beta = 1$ maximizes the ELBO. (Our models are short runs,
# not optima, so the curve they trace is what this training budget achieves, an upper bound on the best
# achievable one.)
#
# A common bug is a $\beta$ in disguise: averaging the reconstruction term over the 784 pixels while summing
# the KL over the latent dimensions minimizes $D / 784 + R$, which is $D + 784 R$ up to a factor: $\beta =
# 784$, far beyond the right end of the sweep below.
#
# We train six MLP VAEs (784–256–16, Bernoulli decoder, dynamic binarization, 10 epochs) that differ only in
# $\beta$: the same initialization and the same key, so the sweep is a controlled comparison. `fit` takes a
# constant $\beta$ as an argument of its compiled epoch, so the sweep compiles the training step once.

# %%
from vae_lib.training import _train_epoch  # noqa: E402  (private: used only to count compilations)

BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
sweep = {}
compiled_before = _train_epoch._cache_size()
t0 = time.perf_counter()
for beta in BETAS:
    model = vae_lib.mlp_vae(784, LATENT, hidden=HIDDEN, rngs=nnx.Rngs(k_init))
    hist = vae_lib.fit(model, x_train, key=k_fit, epochs=EPOCHS, beta=beta, binarize=True, progress=False)
    d, r = per_digit_elbo(k_eval, model, x_test_bin)  # the same key for every model: paired
    sweep[beta] = dict(model=model, hist=hist, D=d, R=r, elbo=-(d + r))
new_compilations = _train_epoch._cache_size() - compiled_before
print(
    f"six fits in {time.perf_counter() - t0:.1f} s; new compilations of the training epoch: {new_compilations}"
)
print(f"{'beta':>5} {'D (distortion)':>16} {'R (rate)':>12} {'ELBO = -(D + R)':>18}"
      f" {'ELBO - ELBO(beta=1), paired':>30}")  # fmt: skip
for beta, s in sweep.items():
    diff = s["elbo"] - sweep[1.0]["elbo"]
    print(f"{beta:>5} {s['D'].mean():>9.1f} +- {se(s['D']):.1f} {s['R'].mean():>6.1f} +- {se(s['R']):.1f}"
          f" {s['elbo'].mean():>11.1f} +- {se(s['elbo']):.1f} {diff.mean():>17.2f} +- {se(diff):.2f}")  # fmt: skip

# %% [markdown]
# The same quantities computed by hand for the $\beta = 1$ model, from its encoder and decoder, with the
# Bernoulli log-likelihood and the closed-form Gaussian KL written out, and the same draws of $z$ as the
# library's (the same key): $D + R$ equals $-\text{ELBO}$ as `vae_lib` computes it. The last check uses
# `fit`'s history: training minimizes $D + \beta R$, so its reported loss differs from $-\text{ELBO}$ by
# $(\beta - 1) R$ on the training digits.

# %%
model1 = sweep[1.0]["model"]
S = 10
mean, logvar = model1.encode(x_test_bin)  # (N, Z) each
eps = jax.random.normal(k_eval, (S, *mean.shape))  # the draws reparameterize(k_eval, ...) makes
z = mean + jnp.exp(0.5 * logvar) * eps  # (S, N, Z)
logits = model1.decode(z.reshape(-1, LATENT)).reshape(S, N_TEST, 784)
log_px_z = jnp.sum(x_test_bin * logits - jax.nn.softplus(logits), axis=-1)  # (S, N): Bernoulli, summed
d_hand = -np.asarray(log_px_z.mean(axis=0), np.float64)  # (N,)
r_hand = np.asarray(0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1), np.float64)  # (N,)
# Monte Carlo standard error of the data-set mean of D over the S draws (the KL is exact)
mc_se = math.sqrt(float(jnp.sum(jnp.var(log_px_z, axis=0, ddof=1) / S))) / N_TEST
lib = vae_lib.evaluate_elbo(k_eval, model1, x_test_bin, num_samples=S)  # the library, its own draws
print(f"by hand: D = {d_hand.mean():.3f}, R = {r_hand.mean():.3f}, D + R = {(d_hand + r_hand).mean():.3f}")
print(f"vae_lib.elbo_per_example, same draws: D + R = {(sweep[1.0]['D'] + sweep[1.0]['R']).mean():.3f}")
print(
    f"vae_lib.evaluate_elbo, other draws: -ELBO = {-float(lib.elbo):.3f} (Monte Carlo s.e. of each: {mc_se:.3f})"
)
for beta in (0.25, 4.0):
    h = sweep[beta]["hist"]
    print(f"beta = {beta}: last epoch's train loss + train ELBO = {h['train_loss'][-1] + h['train_elbo'][-1]:.2f}"
          f", (beta - 1) R = {(beta - 1) * sweep[beta]['R'].mean():.2f} (R on the test digits)")  # fmt: skip

# %%
assert new_compilations <= 1  # one compiled epoch served the whole sweep (0 if an earlier cell compiled it)
np.testing.assert_allclose(d_hand, sweep[1.0]["D"], rtol=1e-4)
np.testing.assert_allclose(r_hand, sweep[1.0]["R"], rtol=1e-4)
assert abs((d_hand + r_hand).mean() + float(lib.elbo)) < 4 * math.sqrt(2) * mc_se  # independent draws
Rs, Ds = np.array([sweep[b]["R"].mean() for b in BETAS]), np.array([sweep[b]["D"].mean() for b in BETAS])
assert np.all(np.diff(Rs) < 0) and np.all(np.diff(Ds) > 0)  # more beta: less rate, more distortion
best = max(BETAS, key=lambda b: sweep[b]["elbo"].mean())
assert best == 1.0
for b in (0.5, 2.0):
    diff = sweep[b]["elbo"] - sweep[1.0]["elbo"]
    assert diff.mean() < -4 * se(diff)
for b in (0.25, 4.0):
    h = sweep[b]["hist"]
    gap = h["train_loss"][-1] + h["train_elbo"][-1]
    assert abs(gap - (b - 1) * sweep[b]["R"].mean()) < 0.15 * abs((b - 1) * sweep[b]["R"].mean())
assert abs(Rs[0] - 41) < 6 and abs(Rs[-1] - 1.9) < 1.0 and abs(Ds[0] - 102) < 8 and abs(Ds[-1] - 181) < 12
assert abs(sweep[1.0]["elbo"].mean() + 133.3) < 5

# %% [markdown]
# Reading the table from top to bottom:
#
# - As $\beta$ grows from 0.25 to 8, the rate falls from about 41 to 2 nats per digit and the distortion
#   rises from about 102 to 181: each model buys a cheaper code with a worse reconstruction.
# - $\beta = 1$ has the highest ELBO, about $-133.3$ nats. $\beta = 0.5$ and $\beta = 2$ are $1.9 \pm 0.1$ and
#   $6.7 \pm 0.2$ nats below it, the two ends 9 and 50 nats. The $\pm 1.1$ beside each model's own ELBO is
#   its standard error over the test digits; the paired differences are two to eight times more precise,
#   because the same digits and the same draws of $z$ enter both models.
# - The hand computation gives the library's numbers on the same draws to float precision (133.303), and
#   `evaluate_elbo` with its own draws gives 133.24, within Monte Carlo error: $D + R = -\text{ELBO}$.
# - At $\beta \ne 1$ the training loss is not $-\text{ELBO}$: at $\beta = 0.25$ it is about 31 nats below it,
#   at $\beta = 4$ about 18 nats above, $(\beta - 1) R$ in both cases. A loss curve from a $\beta$-VAE is
#   not an ELBO curve.
#
# The figure draws the curve. The dashed line holds every $(R, D)$ with the $\beta = 1$ model's ELBO:
# all six models lie on or above it, and only $\beta = 1$ touches it.

# %%
fig, ax = plt.subplots(figsize=(6, 4.5))
ax.plot(Rs, Ds, "o-", color="C0")
for b, r, d in zip(BETAS, Rs, Ds, strict=True):
    ax.annotate(f"β = {b:g}", (r, d), textcoords="offset points", xytext=(6, 4))
r_line = np.linspace(0, Rs.max() * 1.05, 10)
e1 = Ds[BETAS.index(1.0)] + Rs[BETAS.index(1.0)]
ax.plot(r_line, e1 - r_line, "--", color="grey", label=f"D + R = {e1:.0f} (the β = 1 model's −ELBO)")
ax.set_xlabel("rate R (nats per digit)")
ax.set_ylabel("distortion D (nats per digit)")
ax.set_title("The β sweep traces a rate–distortion curve (test digits)")
ax.set_ylim(Ds.min() - 10, Ds.max() + 10)
ax.legend()
plt.show()

# %% [markdown]
# What do the two ends look like? Below: reconstructions $\mathbb{E}[x \mid z = \mu(x)]$ of eight test
# digits, and decoded prior draws $\mathbb{E}[x \mid z]$, $z \sim \mathcal{N}(0, I)$, for $\beta = 0.25$, 1
# and 8. To put a number on "the reconstruction is still the same digit", a 1-nearest-neighbour classifier
# on the 4,000 training digits labels the reconstructions of 500 test digits; its accuracy on those test
# digits themselves is the ceiling.

# %%
x_tr_np = np.asarray(x_train)


def nn_labels(images):
    """Label of the nearest training digit (Euclidean, grey levels) of each image: (n, 784) -> (n,)."""
    a = np.asarray(images, np.float64)
    d2 = (a**2).sum(1)[:, None] - 2.0 * a @ x_tr_np.T + (x_tr_np**2).sum(1)[None, :]
    return y_train[d2.argmin(axis=1)]


show = np.asarray(x_test_bin[:8])
fig, axes = plt.subplots(7, 1, figsize=(6, 6.2))
image_grid(show, ncols=8, ax=axes[0], title="test digits (binarized)")
kept = {"the test digits themselves": np.mean(nn_labels(x_test_bin[:500]) == y_test[:500])}
for i, beta in enumerate((0.25, 1.0, 8.0)):
    m = sweep[beta]["model"]
    image_grid(
        np.asarray(m.reconstruct(show)), ncols=8, ax=axes[1 + i], title=f"reconstructions, β = {beta:g}"
    )
    image_grid(  # the same key, so the same draws z for each model
        np.asarray(m.sample(k_samples, 8)), ncols=8, ax=axes[4 + i], title=f"prior samples, β = {beta:g}"
    )
for beta in BETAS:
    labels = nn_labels(sweep[beta]["model"].reconstruct(x_test_bin[:500]))
    kept[f"reconstructions, beta = {beta:g}"] = np.mean(labels == y_test[:500])
plt.tight_layout()
plt.show()
print("share of 500 test digits whose 1-NN label is the true label:")
for name, k in kept.items():
    print(f"  {name:>28}: {k:.0%} +- {math.sqrt(k * (1 - k) / 500):.0%}")

# %%
assert abs(kept["the test digits themselves"] - 0.92) < 0.03
assert (
    abs(kept["reconstructions, beta = 0.25"] - 0.87) < 0.06
    and abs(kept["reconstructions, beta = 8"] - 0.48) < 0.12
)
assert kept["reconstructions, beta = 8"] < kept["reconstructions, beta = 1"] - 0.2

# %% [markdown]
# - **Low rate ($\beta = 8$, 2 nats per digit).** The code has room for little more than the rough shape:
#   reconstructions are blurred prototypes, and only about 48% of them are still labelled as the digit they
#   came from (against 92% for the digits themselves). Prior samples are smooth and alike.
# - **High rate ($\beta = 0.25$, 41 nats).** Reconstructions keep the digit (about 87%), but prior samples
#   look broken, and worse than at $\beta = 1$: the decoder has learned to read precise codes, and a prior
#   draw is rarely one (Section 2 finds this model's aggregate posterior 34 nats from the prior).
# - The ELBO's own choice, $\beta = 1$, sits in between. Neither end is "better": the curve is a menu, and
#   the ELBO picks the point where one nat of rate costs one nat of distortion.
#
# ## 2. Where the rate goes: ELBO surgery, and the holes
#
# Chapter 4 split the KL term exactly (Hoffman & Johnson, 2016):
#
# $$
# R = \mathbb{E}_{q(x)}\,\mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)
#   = I_q(x; z) + \mathrm{KL}\big(q_\phi(z) \,\|\, p(z)\big),
# \qquad q_\phi(z) = \mathbb{E}_{q(x)}\, q_\phi(z \mid x):
# $$
#
# the information a code carries about which digit it came from, plus the distance from the **aggregate
# posterior** $q_\phi(z)$ (the codes of all the digits together) to the prior. Only the first part is
# useful to the decoder; the second is the part of the rate spent on codes that, taken together, do not
# look like the prior, which is what makes prior draws unlike codes. With $q(x)$
# uniform on $N$ digits, $I_q(x; z) \le \log N$ (Exercise 3). `vae_lib.diagnostics.elbo_surgery` estimates
# both parts on $N = 2{,}000$ training digits ($\log N = 7.6$ nats).
#
# The **hole fraction** of Chapters 1 and 4 measures the second part locally: the share of prior draws
# farther from every training code than 99% of the test codes are. For a VAE we take one draw
# $z \sim q_\phi(z \mid x)$ per digit as its code, not the mean $\mu(x)$, and the column "holes, means" shows
# why. When the rate is low, each posterior is nearly as wide as the prior and its mean sits near 0 (for a
# unit the decoder ignores, $\mu_j(x) \approx 0$ and $\sigma_j(x) \approx 1$ for every digit), so the
# *means* fill only a small ball in the middle, and every prior draw looks far from all of them, although
# the aggregate posterior covers the prior well. Draws from $q_\phi(z \mid x)$ are what the decoder was
# trained on.

# %%
N_SURGERY = 2000
LOG_N = math.log(N_SURGERY)
k_s, k_tr, k_te, k_pr = jax.random.split(k_surgery, 4)  # the same keys for every model


def latent_report(model):
    """ELBO surgery on 2,000 training codes, hole fractions of 1,000 prior draws, active units."""
    mu_tr, lv_tr = encode_dataset(model, x_train_bin)  # (4000, Z) each
    mu_te, lv_te = encode_dataset(model, x_test_bin)  # (1000, Z) each
    z_tr = vae_lib.reparameterize(k_tr, mu_tr, lv_tr)  # one code per digit, drawn from q(z|x)
    z_te = vae_lib.reparameterize(k_te, mu_te, lv_te)
    z_p = jax.random.normal(k_pr, (1000, LATENT)) if model.prior is None else model.prior.sample(k_pr, 1000)
    return dict(
        surgery=elbo_surgery(k_s, mu_tr[:N_SURGERY], lv_tr[:N_SURGERY], log_prior=model.log_prior),
        holes=hole_fraction(z_p, z_tr, z_te),
        holes_means=hole_fraction(z_p, mu_tr, mu_te),
        active=active_units(mu_te)[0],
    )


def binomial_se(p, n=1000):
    return math.sqrt(p * (1 - p) / n)


for beta in BETAS:
    sweep[beta].update(latent_report(sweep[beta]["model"]))

print(f"{'beta':>5} {'R (train)':>10} {'I(x; z)':>14} {'KL(q(z)||p(z))':>16} {'holes':>14} {'holes, means':>13}"
      f" {'active':>7}")  # fmt: skip
for beta, s in sweep.items():
    g, h = s["surgery"], s["holes"]
    print(f"{beta:>5} {float(g.kl):>10.2f} {float(g.mutual_information):>7.2f} +- {float(g.mutual_information_se):.2f}"
          f" {float(g.marginal_kl):>9.2f} +- {float(g.marginal_kl_se):.2f} {h:>7.1%} +- {binomial_se(h):.1%}"
          f" {s['holes_means']:>12.1%} {s['active']:>7}")  # fmt: skip

# %%
for beta, s in sweep.items():
    g = s["surgery"]
    total = float(g.mutual_information + g.marginal_kl)
    assert abs(total - float(g.kl)) < 4 * float(g.mutual_information_se + g.marginal_kl_se) + 0.05
    assert float(g.mutual_information) <= LOG_N + 1e-3
    if beta <= 1:
        assert float(g.mutual_information) > LOG_N - 0.3  # at the ceiling
mkl = np.array([float(sweep[b]["surgery"].marginal_kl) for b in BETAS])
holes = np.array([sweep[b]["holes"] for b in BETAS])
assert np.all(np.diff(mkl) < 0)  # the aggregate posterior gets closer to the prior as beta grows
assert abs(mkl[BETAS.index(1.0)] - 13.4) < 3 and abs(mkl[0] - 33.8) < 6 and mkl[-1] < 1.0
assert np.all(np.diff(holes[BETAS.index(1.0) :]) < 0)  # from beta = 1 up, fewer holes with less marginal KL
assert abs(holes[BETAS.index(1.0)] - 0.21) < 0.07 and holes[-1] < 0.04
assert (
    max(holes[:2]) < 0.4 and holes[0] < holes[BETAS.index(1.0)] + 0.08
)  # below beta = 1: no longer tracks it
assert sweep[8.0]["holes_means"] > 0.95 and np.all(np.diff([sweep[b]["holes_means"] for b in BETAS]) > -0.01)

# %% [markdown]
# - The split adds up for every model (checked: $I_q + \mathrm{KL}(q(z) \,\|\, p(z))$ equals the rate within
#   Monte Carlo error), and $I_q(x; z)$ never exceeds $\log N = 7.6$.
# - For $\beta \le 1$ the mutual information is at that ceiling (7.5 to 7.6 nats): every code already
#   identifies its digit among the 2,000, and what the rate adds above the ceiling is all marginal KL,
#   about 13 nats at $\beta = 1$ and 34 at $\beta = 0.25$. As $\beta$ grows, the rate shrinks mostly through
#   that part: 5.6 nats at $\beta = 2$, 0.4 at $\beta = 8$, where the mutual information is 1.6.
# - **Holes.** From $\beta = 1$ upwards the hole fraction falls with $\mathrm{KL}(q(z) \,\|\, p(z))$: about
#   21%, 15%, 6% and 2% of prior draws land in holes. This is Chapter 4's observation, that the KL term
#   pulls the codes towards the prior without making them fill it, measured along $\beta$: a stronger pull
#   leaves fewer holes, at the price of a worse reconstruction. Below $\beta = 1$ the two part ways: the
#   marginal KL more than doubles while the hole fraction stays around 23% to 28%. A likely reading (not
#   measured here): past the ceiling, each posterior is a narrow bump that picks out its digit, and the
#   extra marginal KL describes how spiky the mixture of 2,000 bumps is, at a scale smaller than the
#   distance between neighbouring codes, which a nearest-neighbour test does not see. The hole fraction is
#   local and geometric; the marginal KL is a ratio of densities (and part of it is a statement about $N$,
#   Exercise 3).
# - With means as codes the hole fraction would *rise* with $\beta$, to 100% at $\beta = 8$: the artefact
#   described above. All 16 units count as active in every model of the sweep (Burda et al.'s threshold,
#   $\operatorname{Var}_x \mathbb{E}_q[z_j] > 0.01$, is low); none has collapsed yet.
#
# ## 3. Posterior collapse, made to happen
#
# **Posterior collapse** is the far end of the curve: $q_\phi(z \mid x) \approx p(z)$ for every digit, a rate
# near 0, and a decoder that models the data without looking at $z$. To make it happen on the digits we use
# the other decoder of Chapter 2: a Gaussian $p_\theta(x \mid z) = \mathcal{N}(\hat x(z), \sigma^2 I)$ on the
# grey levels, with a **fixed** variance. (The data are continuous, so $\log p(x)$ is a log-*density* in
# nats per digit, and is compared only between models of the same grey-level digits.) Its reconstruction
# term is $-\lVert x - \hat x(z) \rVert^2 / (2\sigma^2) - \tfrac{D}{2} \log(2\pi\sigma^2)$, and a code can at
# best remove all the pixel variance from the squared error. The cell below measures that variance and the
# eigenvalues of the pixel covariance. For a **linear** decoder the answer is exact: the ELBO's optimum is
# probabilistic PCA, which uses a latent direction only along a principal component whose eigenvalue
# $\lambda_j$ exceeds $\sigma^2$ (Tipping & Bishop, 1999; Lucas et al., 2019, who make this the centre of
# their account of posterior collapse; Chapter 6 checks it number by number).

# %%
x_train_grey, x_test_grey = jnp.asarray(x_train), jnp.asarray(x_test)
SIGMA2 = math.exp(2.0)  # a fixed decoder variance of e^2 = 7.39
eigenvalues = np.linalg.eigvalsh(np.cov(np.asarray(x_train, np.float64).T))[::-1]  # descending
print(f"pixel variance summed over the 784 pixels: {eigenvalues.sum():.1f}; "
      f"at sigma^2 = {SIGMA2:.2f} it is worth {eigenvalues.sum() / (2 * SIGMA2):.1f} nats of reconstruction")  # fmt: skip
print(f"largest eigenvalues of the pixel covariance: {np.round(eigenvalues[:6], 2)}")
for s2 in (1.0, math.e, SIGMA2):
    print(f"eigenvalues above sigma^2 = {s2:.2f}: {int(np.sum(eigenvalues > s2))}")
assert eigenvalues[0] < SIGMA2 and abs(eigenvalues[0] - 5.2) < 0.2 and abs(eigenvalues.sum() - 52.9) < 0.5

# %% [markdown]
# At $\sigma^2 = e^2 \approx 7.39$, even perfect reconstructions would gain at most $52.9 / (2 \cdot 7.39)
# \approx 3.6$ nats of reconstruction, and the largest eigenvalue, 5.2, is below $\sigma^2$: the linear
# VAE's optimum is completely collapsed. Our decoder is not linear, so this is a guide, not a proof; the
# measurement follows. Five models, each the same 784–256–16 MLP trained for 10 epochs from the same
# initialization and key, with $\sigma^2 = e^2$ except the last:
#
# - **collapsed**: plain ELBO, $\beta = 1$;
# - **KL warm-up** (Bowman et al., 2016; Sønderby et al., 2016): $\beta$ rises linearly from 0 to 1 over the
#   first half of training (an Optax schedule passed as `beta=`), then stays at 1;
# - **free bits** (Kingma et al., 2016): `free_bits=0.5`: each latent dimension's KL, averaged over the
#   batch, is charged only above 0.5 nats (the objective's KL term is $\sum_j \max(0.5, \mathrm{KL}_j)$);
# - **lower $\beta$** $= 0.1$;
# - **learned $\sigma^2$**: `obs_logvar="shared"`, one variance learned with the networks (the $\sigma^2 I$
#   of probabilistic PCA).
#
# For each: the test ELBO (the true one, $\beta = 1$, under the model's own $\sigma^2$), the rate, the active
# units (Burda et al., 2016), the number of dimensions with a KL above 0.1 nats, and the test $\log p(x)$
# (`importance_log_likelihood`, $k = 50$: a lower bound in expectation that tightens as $k$ grows, so
# models are compared at equal $k$), with its paired difference from the collapsed model.

# %%
steps_per_epoch = len(x_train) // 128
warmup = optax.linear_schedule(0.0, 1.0, transition_steps=EPOCHS * steps_per_epoch // 2)  # beta: 0 -> 1
FIXES = {
    "collapsed (beta = 1)": dict(),
    "KL warm-up": dict(beta=warmup),
    "free bits 0.5": dict(free_bits=0.5),
    "lower beta = 0.1": dict(beta=0.1),
}
gauss = {}
k_iw_gauss = jax.random.fold_in(k_iwae, 1)
for name, kw in {**FIXES, "learned sigma^2": dict()}.items():
    obs_logvar = "shared" if name == "learned sigma^2" else math.log(SIGMA2)
    model = vae_lib.mlp_vae(
        784, LATENT, hidden=HIDDEN, likelihood="gaussian", obs_logvar=obs_logvar, rngs=nnx.Rngs(k_init)
    )
    watch = (
        dict(x_test=x_test_grey) if name in ("collapsed (beta = 1)", "KL warm-up") else {}
    )  # rate per epoch
    hist = vae_lib.fit(model, x_train_grey, key=k_gauss, epochs=EPOCHS, progress=False, **watch, **kw)
    mu, lv = encode_dataset(model, x_test_grey)
    d, r = per_digit_elbo(k_eval, model, x_test_grey)
    log_px = np.asarray(vae_lib.importance_log_likelihood(k_iw_gauss, model, x_test_grey, num_samples=50))
    gauss[name] = dict(
        model=model, hist=hist, elbo=-(d + r), R=r, log_px=log_px, kl_dims=np.asarray(kl_per_dimension(mu, lv)),
        active=active_units(mu)[0],
    )  # fmt: skip

base = gauss["collapsed (beta = 1)"]
print(f"{'':22}{'test ELBO':>10}{'rate R':>8}{'active':>8}{'dims > 0.1 nat':>15}{'test log p(x)':>15}"
      f"{'ELBO - collapsed':>19}{'log p(x) - collapsed':>22}   (paired)")  # fmt: skip
for name, g in gauss.items():
    g["d_elbo"], g["d_log_px"] = g["elbo"] - base["elbo"], g["log_px"] - base["log_px"]
    print(f"{name:22}{g['elbo'].mean():>10.1f}{g['R'].mean():>8.2f}{g['active']:>8}{int(np.sum(g['kl_dims'] > 0.1)):>15}"
          f"{g['log_px'].mean():>15.1f}{g['d_elbo'].mean():>11.2f} +- {se(g['d_elbo']):.2f}"
          f"{g['d_log_px'].mean():>13.2f} +- {se(g['d_log_px']):.2f}")  # fmt: skip
learned_sigma2 = float(jnp.exp(gauss["learned sigma^2"]["model"].decoder.obs_logvar[...]))
print(f"learned sigma^2 = {learned_sigma2:.3f}")
h = gauss["KL warm-up"]["hist"]
print(
    "warm-up, per epoch: beta",
    np.round(h["beta"], 2),
    "\n                   test rate",
    np.round(h["test_kl"], 2),
)
collapsed_rec = np.asarray(base["model"].reconstruct(x_test_grey))  # (1000, 784): E[x | z = mu(x)]
collapsed_draws = np.asarray(base["model"].sample(k_draws, 100))  # E[x|z] for 100 prior draws
print(f"collapsed model: largest pixel std across the 1,000 test reconstructions {collapsed_rec.std(0).max():.4f}; "
      f"across 100 decoded prior draws {collapsed_draws.std(0).max():.3f} (test digits: "
      f"{np.asarray(x_test).std(0).max():.3f})")  # fmt: skip
# %%
g = gauss
assert g["collapsed (beta = 1)"]["R"].mean() < 0.1 and g["collapsed (beta = 1)"]["active"] == 0
assert abs((base["log_px"] - base["elbo"]).mean()) < 0.1  # nothing in the code: the ELBO is tight
assert collapsed_rec.std(0).max() < 0.01 and collapsed_draws.std(0).max() > 0.05
assert g["KL warm-up"]["R"].mean() < 0.1 and abs(g["KL warm-up"]["d_log_px"].mean()) < 0.1
assert g["KL warm-up"]["hist"]["test_kl"][0] > 8 and g["KL warm-up"]["hist"]["test_kl"][1] < 8
for name in ("free bits 0.5", "lower beta = 0.1"):
    assert g[name]["active"] == LATENT and g[name]["R"].mean() > 4
    assert g[name]["d_log_px"].mean() < -4 * se(
        g[name]["d_log_px"]
    )  # lower log p(x) than the collapsed model
    assert g[name]["elbo"].mean() < base["elbo"].mean() - 2 and g[name]["d_elbo"].mean() < -10 * se(
        g[name]["d_elbo"]
    )
assert (
    abs(g["free bits 0.5"]["d_elbo"].mean() + 5.75) < 2
    and abs(g["lower beta = 0.1"]["d_elbo"].mean() + 7.8) < 2.5
)
assert abs(g["free bits 0.5"]["R"].mean() - 6.8) < 1.5 and abs(g["lower beta = 0.1"]["R"].mean() - 9.2) < 2.5
assert (
    abs(g["free bits 0.5"]["d_log_px"].mean() + 3.2) < 1.5
    and abs(g["lower beta = 0.1"]["d_log_px"].mean() + 5.1) < 2
)
assert g["learned sigma^2"]["active"] == LATENT and g["learned sigma^2"]["d_log_px"].mean() > 600
assert 0.5 < learned_sigma2 < 1.0

# %% [markdown]
# - **Collapsed.** A rate of 0.02 nats, no active unit, no dimension above 0.1 nats: the encoder outputs
#   (nearly) the prior for every digit, and the reconstructions of all 1,000 test digits are one and the
#   same image (no pixel varies by more than 0.004 across them). Decoded prior draws do differ from each
#   other (the decoder has not flattened its response to $z$ in 10 epochs), but what they vary with is
#   noise: $z$ carries 0.02 nats about the digit. The model's $\log p(x)$ equals its ELBO: with nothing in
#   the code, there is nothing for $q$ to get wrong.
# - **Warm-up** ends where plain training ends: rate 0.02, the same $\log p(x)$ to 0.01 nats. The right
#   panel below shows why. After the first epoch, with $\beta$ at 0.19, the rate is 18.7 nats; it falls as
#   $\beta$ rises, to 3.8 nats already at $\beta = 0.39$, long before $\beta$ reaches 1. Warm-up changes the
#   path, not the optimum, and here the optimum appears to be collapsed.
# - **Free bits** hold every dimension near 0.5 nats (rate 6.8, 16 active units), and **$\beta = 0.1$** buys
#   a rate of 9.2. By the usual diagnostics both are fixed; yet both have a *lower* ELBO (by
#   $5.75 \pm 0.06$ and $7.81 \pm 0.08$ nats) and a *lower* test $\log p(x)$ (by $3.2 \pm 0.05$ and
#   $5.1 \pm 0.07$ nats; all four paired) than the collapsed model. They pay for information that a decoder with
#   $\sigma^2 = 7.39$ cannot use.
# - **Learning $\sigma^2$** is the fix. It settles at about 0.73, the code carries 8.4 nats spread over all
#   16 dimensions, and the test $\log p(x)$ is 879 nats higher. The collapse was a symptom: the fixed noise
#   model explained the digits away as noise, and no training trick can argue with that.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
ax = axes[0]
width = 0.16
for i, (name, g) in enumerate(gauss.items()):
    label = f"{name} (rate {g['R'].mean():.2f})"
    ax.bar(np.arange(LATENT) + (i - 2) * width, np.sort(g["kl_dims"])[::-1], width, label=label)
ax.set_xlabel("latent dimension (sorted by its KL)")
ax.set_ylabel("E_x KL(q(z_j|x) || N(0, 1)) (nats)")
ax.set_title("KL per latent dimension, test digits")
ax.legend(fontsize=8)
ax = axes[1]
for name in ("collapsed (beta = 1)", "KL warm-up"):
    h = gauss[name]["hist"]
    ax.plot(h["epoch"], h["test_kl"], "o-", label=f"rate, {name}")
ax.set_yscale("log")
ax.set_xlabel("epoch")
ax.set_ylabel("rate R on the test digits (nats, log scale)")
ax.set_title("Warm-up: a high rate while β is small, gone before β = 1")
ax2 = ax.twinx()
ax2.plot(
    gauss["KL warm-up"]["hist"]["epoch"], gauss["KL warm-up"]["hist"]["beta"], "k:", label="β of the warm-up"
)
ax2.set_ylabel("β at the end of the epoch")
ax2.set_ylim(0, 1.05)
lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Lower $\beta$ and smaller $\sigma^2$ are the same remedy.** Exercise 1 shows that $\beta = 0.1$ with
# $\sigma^2 = e^2$ trains the same networks as the plain ELBO with $\sigma^2 = 0.1\,e^2 = 0.74$, close to the
# variance the last model learned. So the $\beta = 0.1$ networks should be a good model once they are given
# that variance. The cell loads them into a decoder with $\sigma^2$ fixed at 0.74 and computes the test
# $\log p(x)$ again.

# %%
BETA_LOW = FIXES["lower beta = 0.1"]["beta"]
rescaled = vae_lib.mlp_vae(
    784,
    LATENT,
    hidden=HIDDEN,
    likelihood="gaussian",
    obs_logvar=math.log(BETA_LOW * SIGMA2),
    rngs=nnx.Rngs(0),
)
nnx.update(rescaled, nnx.state(gauss["lower beta = 0.1"]["model"]))  # the same networks, sigma^2 = 0.74
log_px_rescaled = np.asarray(
    vae_lib.importance_log_likelihood(k_iw_gauss, rescaled, x_test_grey, num_samples=50)
)
gap_rescaled = log_px_rescaled - gauss["learned sigma^2"]["log_px"]
gain_rescaled = log_px_rescaled - base["log_px"]
print(f"beta = 0.1 networks with sigma^2 = {BETA_LOW * SIGMA2:.3f}: test log p(x) = {log_px_rescaled.mean():.1f}, "
      f"{gain_rescaled.mean():+.1f} against the collapsed model, "
      f"{gap_rescaled.mean():+.2f} +- {se(gap_rescaled):.2f} against the learned-sigma^2 model")  # fmt: skip
assert (
    abs(gap_rescaled.mean()) < 15
    and gain_rescaled.mean() > 0.95 * gauss["learned sigma^2"]["d_log_px"].mean()
)

# %% [markdown]
# The $\beta = 0.1$ networks, evaluated with the variance their $\beta$ implies, come within about 7 nats of
# the learned-variance model, out of the 879 nats that separate it from the collapsed one. Lowering $\beta$
# had found nearly the right networks; what was wrong was the $\sigma^2 = 7.39$ we then judged them by.
#
# **What the three remedies are for.** Warm-up and free bits were designed for collapse that is an
# *optimization* failure: with a decoder strong enough to model the data alone (an autoregressive decoder
# for text, Bowman et al., 2016; a PixelCNN decoder for images, Chen et al., 2017), the KL term pushes the
# posteriors to the prior in the first steps, before the decoder has learned to use the code, and training
# stays there. Here everything points to collapse being the *optimum* of the model as written down (for
# the linear model it provably is): warm-up returned to it, and forcing a rate lowered $\log p(x)$. One
# run of each cannot prove it for the nonlinear model, but it is the reading the measurements support. When a VAE collapses, first ask whether the
# likelihood leaves the code anything to explain (a fixed, too large $\sigma^2$; a reconstruction term
# averaged over pixels, which is the same thing, Exercise 1). Only then reach for warm-up and free bits.
#
# ## 4. A prior learned with the model
#
# Section 2 showed where much of the rate goes: even at $\beta = 1$, about 13 of the 21 nats are
# $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$, the distance from the codes to $\mathcal{N}(0, I)$. But the prior is part
# of the model. $\mathrm{KL}(q_\phi(z) \,\|\, p(z))$ is the only part of the ELBO that depends on $p(z)$, so for
# a given encoder the best prior is the aggregate posterior itself, where that term is 0 (Hoffman &
# Johnson, 2016). The aggregate posterior is a mixture over all the training digits; the **VampPrior**
# (Tomczak & Welling, 2018) approximates it with a mixture over $K$ learned *pseudo-inputs* $u_k$, encoded by
# the model's own encoder:
#
# $$
# p_\lambda(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k).
# $$
#
# In `vae_lib` a prior is an `nnx.Module` with `log_prob(z)` and `sample(key, n)`, handed to
# `VAE(encoder, decoder, prior=...)`; `vae_lib.priors` has the VampPrior and a mixture of Gaussians. `fit`
# trains the prior's parameters (here $K = 50$ pseudo-inputs, started at 50 training digits) with the
# encoder and decoder. There is no closed-form KL to a mixture, so the objective uses the Monte Carlo
# estimate $\log q_\phi(z \mid x) - \log p_\lambda(z)$ on the same draws of $z$ as the reconstruction term.
# The comparison is at an equal budget: the same initialization of the encoder and decoder as the
# $\beta = 1$ model of section 1, the same key, the same 10 epochs. The VampPrior adds $50 \times 784 =
# 39{,}200$ parameters and the cost of encoding 50 pseudo-inputs at every step.

# %%
normal_model = sweep[1.0]["model"]
base_model = vae_lib.mlp_vae(784, LATENT, hidden=HIDDEN, rngs=nnx.Rngs(k_init))  # the same initialization
K_PSEUDO = 50
vamp_model = vae_lib.VAE(
    base_model.encoder, base_model.decoder, prior=VampPrior(base_model.encoder, x_train[:K_PSEUDO])
)
vamp_hist = vae_lib.fit(vamp_model, x_train, key=k_fit, epochs=EPOCHS, binarize=True, progress=False)
d, r = per_digit_elbo(k_eval, vamp_model, x_test_bin)  # the key of section 1: paired with the sweep
priors = {"N(0, I)": sweep[1.0], "VampPrior": dict(model=vamp_model, D=d, R=r, elbo=-(d + r))}
priors["VampPrior"].update(latent_report(vamp_model))
for p in priors.values():
    p["log_px"] = np.asarray(
        vae_lib.importance_log_likelihood(k_iwae, p["model"], x_test_bin, num_samples=100)
    )


def n_params(m):
    return sum(a.size for a in jax.tree.leaves(nnx.state(m, nnx.Param)))


print(f"parameters: N(0, I) model {n_params(normal_model):,}, VampPrior model {n_params(vamp_model):,}")
print(
    f"{'prior':10}{'test ELBO':>10}{'rate':>7}{'I(x; z)':>9}{'KL(q(z)||p(z))':>17}{'holes':>16}{'test log p(x)':>15}"
)
for name, p in priors.items():
    g, h = p["surgery"], p["holes"]
    print(f"{name:10}{p['elbo'].mean():>10.2f}{p['R'].mean():>7.2f}{float(g.mutual_information):>9.2f}"
          f"{float(g.marginal_kl):>10.2f} +- {float(g.marginal_kl_se):.2f}{h:>9.1%} +- {binomial_se(h):.1%}"
          f"{p['log_px'].mean():>15.2f}")  # fmt: skip
for name, p in priors.items():
    g = p["surgery"]
    print(f"{name}: on the 2,000 training codes R = {float(g.kl):.2f}, so KL(q(z)||p(z)) = R - I >= R - log N = "
          f"{float(g.kl) - LOG_N:.2f}; measured {float(g.marginal_kl):.2f}")  # fmt: skip
d_elbo = priors["VampPrior"]["elbo"] - priors["N(0, I)"]["elbo"]
d_logpx = priors["VampPrior"]["log_px"] - priors["N(0, I)"]["log_px"]
print(f"VampPrior - N(0, I), paired over the test digits: ELBO {d_elbo.mean():+.2f} +- {se(d_elbo):.2f}, "
      f"log p(x) {d_logpx.mean():+.2f} +- {se(d_logpx):.2f}")  # fmt: skip

# %%
sn, vp = priors["N(0, I)"], priors["VampPrior"]
assert abs(float(sn["surgery"].mutual_information - vp["surgery"].mutual_information)) < 0.2
assert float(vp["surgery"].marginal_kl) < float(sn["surgery"].marginal_kl) - 3
assert abs(float(vp["surgery"].marginal_kl) - 8.2) < 2.5
for p in (sn, vp):  # the floor R - log N, and how close the marginal KL is to it
    g = p["surgery"]
    assert -0.1 < float(g.marginal_kl) - (float(g.kl) - LOG_N) < 0.5
assert vp["holes"] < sn["holes"] - 3 * math.hypot(binomial_se(vp["holes"]), binomial_se(sn["holes"]))
assert d_elbo.mean() > 4 * se(d_elbo) and d_logpx.mean() > 4 * se(d_logpx) and abs(d_logpx.mean() - 3.5) < 2.0

# %% [markdown]
# - Under both priors the codes identify their digit among the 2,000 ($I_q(x; z)$ about 7.5 nats, at the
#   ceiling $\log N$; the estimate cannot see information beyond that), but the rate falls from about 20.5
#   to 15.6 nats, all of it from $\mathrm{KL}(q(z) \,\|\, p(z))$: from about 13.4 to 8.2 nats. The prior
#   moved towards the codes.
# - **Prior holes** halve: about 21% of $\mathcal{N}(0, I)$ draws land far from every code, against about 10%
#   of VampPrior draws.
# - The test ELBO rises by $3.2 \pm 0.2$ nats and the test $\log p(x)$ ($k = 100$) by $3.5 \pm 0.2$ nats
#   (paired). The direction agrees with Tomczak & Welling's results on full MNIST; the size here belongs to
#   these short runs.
# - What is left, about 8.2 nats of marginal KL, sits almost exactly on a floor set by the rate and the
#   data set's size: $I_q$ cannot exceed $\log N = 7.6$, so $\mathrm{KL}(q(z) \,\|\, p(z)) = R - I_q \ge
#   R - \log N$, with $R$ the rate on the same 2,000 training digits (printed above: the floor is within a
#   few tenths of a nat of the measured value for both priors). Whatever rate a model pays above $\log N$
#   must appear as marginal KL, under any prior. With $I_q$ at its ceiling under both priors, the
#   surgery's finding comes down to this: the VampPrior model pays about 5 nats less rate for codes that
#   still identify their digits. How close its prior gets to the aggregate posterior below that floor
#   cannot be seen with 2,000 digits (Exercise 3).
#
# The samples below are decoded draws from each model's own prior. The VampPrior's look more like clean
# digits in this figure; sample quality is not measured in this chapter.

# %%
k_show = jax.random.fold_in(k_samples, 4)  # one key for both figures' rows: each model draws from its prior
fig, axes = plt.subplots(2, 1, figsize=(6, 2))
image_grid(np.asarray(normal_model.sample(k_show, 10)), ncols=10, ax=axes[0], title="samples, N(0, I) prior")
image_grid(np.asarray(vamp_model.sample(k_show, 10)), ncols=10, ax=axes[1], title="samples, VampPrior")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What rests on one training run
#
# Every model in this chapter was trained once, from the chapter's seed. The $\pm$ in the tables cover
# the choice of test digits and the Monte Carlo draws, not a second training run. So these findings are
# measurements of **one run each**, and another seed would move their values (the asserts hold bands
# around them):
#
# - the $\beta = 1$ model having the best ELBO of the sweep, by 1.9 nats over $\beta = 0.5$;
# - the hole fractions, and their pattern below $\beta = 1$;
# - warm-up returning to collapse, and the sizes of the free-bits and lower-$\beta$ losses (3.2 and 5.1
#   nats of $\log p(x)$);
# - the learned $\sigma^2 \approx 0.73$, and the 7-nat gap of the rescaled $\beta = 0.1$ networks;
# - the VampPrior's gains (3.5 nats of $\log p(x)$, half the holes).
#
# These do not depend on the run: $D + R = -\text{ELBO}$ (an identity, checked to float precision),
# $I_q(x; z) \le \log N$, the split $R = I_q + \mathrm{KL}(q(z) \,\|\, p(z))$, the eigenvalues of the pixel
# covariance and what probabilistic PCA does with them, and the equivalence of $\beta$ and $\sigma^2$
# (Exercise 1). The monotone rate and distortion along the sweep follow from minimizing $D + \beta R$ at
# the optimum; our short runs are not at the optimum, and showed them in this run.
#
# ## Summary
#
# - The ELBO is $-(D + R)$: distortion (nats to describe a digit given its code) plus rate (nats the code
#   costs against the prior). Weighting the rate by $\beta$ moves a model along a rate–distortion curve;
#   here from 41 nats of rate at $\beta = 0.25$ to 2 at $\beta = 8$. Only $\beta = 1$ maximizes the ELBO, and
#   a $\beta$-VAE's training loss is $D + \beta R$, not $-\text{ELBO}$. `fit` takes a constant $\beta$ without
#   recompiling.
# - The low-rate end blurs reconstructions into prototypes (48% keep their digit's 1-NN label at $\beta = 8$,
#   against 92% for the digits themselves); at the high-rate end prior samples break up.
# - ELBO surgery splits the rate into $I_q(x; z)$, capped at $\log N$, and $\mathrm{KL}(q(z) \,\|\, p(z))$. At
#   $\beta \le 1$ the first is at its cap, and the extra rate is all marginal KL. From $\beta = 1$ upwards,
#   the hole fraction of prior draws falls with it (21% to 2%); below $\beta = 1$ it does not follow.
#   Measure holes with draws from $q_\phi(z \mid x)$, not means.
# - Posterior collapse happened on the digits with a Gaussian decoder of fixed $\sigma^2 = e^2$, as
#   probabilistic PCA predicts (largest eigenvalue 5.2 < 7.39). Warm-up ended collapsed again; free bits
#   and $\beta = 0.1$ made every unit active but *lowered* $\log p(x)$; learning $\sigma^2$ raised it by 879
#   nats. Lower $\beta$ and smaller $\sigma^2$ are the same remedy. Collapse can be the optimum of the model
#   as written; the training tricks are for collapse that is not.
# - A VampPrior learned with the model left $I_q$ unchanged (at $\log N$) and cut the rate by about 5 nats,
#   so $\mathrm{KL}(q(z) \,\|\, p(z))$ fell from 13 to 8 nats (for both priors close to the floor
#   $R - \log N$ that $N$ digits allow); it halved the prior holes (21% to 10%) and raised the test
#   $\log p(x)$ by $3.5 \pm 0.2$ nats at an equal budget (one run).
#
# ## Exercises
#
# ### Exercise 1: a fixed variance is a β in disguise
#
# A Gaussian decoder with a fixed variance $\sigma^2$ has the reconstruction term
# $-\lVert x - \hat x(z) \rVert^2 / (2\sigma^2) - \tfrac{D}{2}\log(2\pi\sigma^2)$. (a) Show that maximizing the
# $\beta$-weighted objective with $\sigma^2$ gives the same networks as maximizing the ELBO with
# $\sigma'^2 = \beta\sigma^2$. (b) A tutorial trains with "mean squared error averaged over the pixels, plus
# the KL summed over the latent dimensions". Which $\sigma^2$ does that correspond to for $D = 784$? (c) What
# does (a) say about the rows "lower β" and "learned σ²" of the table in section 3?

# %% [markdown]
# <details><summary>Solution</summary>
#
# (a) With $S(x, z) = \lVert x - \hat x(z) \rVert^2$, the objective is
# $\mathbb{E}_q[-S / (2\sigma^2)] - \beta\,\mathrm{KL} + \text{const}
# = \beta\,\big(\mathbb{E}_q[-S / (2\beta\sigma^2)] - \mathrm{KL}\big) + \text{const}$: a positive multiple of
# the ELBO with variance $\beta\sigma^2$, up to a constant that does not depend on the networks. Both have
# the same maximizers. (Adam makes the training paths nearly the same too, since it is insensitive to a
# constant factor on the gradients.)
#
# (b) $\frac{1}{D} S + \mathrm{KL} = \frac{2}{D}\big(\frac{S}{2} + \frac{D}{2}\mathrm{KL}\big)$, a positive
# multiple of $\frac{S}{2\sigma^2} + \mathrm{KL}$ with $\sigma^2 = D/2 = 392$: over fifty times the $e^2 = 7.4$
# that already collapsed every unit in section 3. (For a Bernoulli decoder the same bug is $\beta = 784$.)
#
# (c) $\beta = 0.1$ at $\sigma^2 = e^2$ trains the networks of a decoder with $\sigma'^2 = 0.74$, and the
# learned variance ended at about 0.73: the two rows have about the same rate and all units active, and
# section 3 showed that the $\beta = 0.1$ networks, given $\sigma^2 = 0.74$, come within about 7 nats of the
# learned-variance model's $\log p(x)$.
#
# </details>

# %% [markdown]
# ### Exercise 2: the linear VAE's collapse threshold
#
# For a linear decoder $\hat x = W z + b$ with fixed $\sigma^2$, the ELBO's optimum is probabilistic PCA
# (Tipping & Bishop, 1999; Lucas et al., 2019): latent directions along the principal components with
# eigenvalue $\lambda_j > \sigma^2$ are used, the others collapse, and the rate of the optimum is
# $R = \tfrac12 \sum_{\lambda_j > \sigma^2} \log(\lambda_j / \sigma^2)$. From the eigenvalues of section 3,
# compute the number of used directions and the rate for $\sigma^2 = 1$, $e$, $e^2$ and the learned
# $\sigma^2$ (at most 16 directions), and compare with the rates the nonlinear models of section 3 reached.


# %% [markdown]
# <details><summary>Solution</summary>
#
# The cell finds 12 used directions at $\sigma^2 = 1$ (rate 4.4 nats), 4 at $\sigma^2 = e$ (0.6 nats), none
# at $\sigma^2 = e^2$, and all 16 at the learned $\sigma^2 \approx 0.73$ (6.7 nats). The collapsed nonlinear
# model matches the linear prediction at $e^2$ (rate 0.02). With the learned variance the nonlinear model
# spends more, 8.4 nats: a nonlinear decoder can use a code in ways no linear one can, so the linear
# threshold is a guide, not a bound. As a fixed $\sigma^2$ grows, the linear model switches its units off
# one by one, the direction with the smallest eigenvalue first; the largest, 5.2, is the last to go.
#
# </details>


# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 2: try it yourself first, then run this cell.
def ppca_rate(sigma2, lam=eigenvalues[:LATENT]):  # at most LATENT directions can be used
    used = lam > sigma2
    return int(used.sum()), float(0.5 * np.sum(np.log(lam[used] / sigma2)))


for name, s2 in (("1", 1.0), ("e", math.e), ("e^2", SIGMA2), ("learned", learned_sigma2)):
    n_used, rate = ppca_rate(s2)
    print(
        f"sigma^2 = {name:>7} ({s2:.2f}): the linear optimum uses {n_used:2d} directions, rate {rate:.2f} nats"
    )
print(f"measured, nonlinear decoder: sigma^2 = e^2: rate {gauss['collapsed (beta = 1)']['R'].mean():.2f}; "
      f"learned sigma^2: rate {gauss['learned sigma^2']['R'].mean():.2f}")  # fmt: skip
assert ppca_rate(SIGMA2) == (0, 0.0) and gauss["collapsed (beta = 1)"]["R"].mean() < 0.1
assert ppca_rate(1.0)[0] == 12 and ppca_rate(math.e)[0] == 4
assert ppca_rate(learned_sigma2)[1] < gauss["learned sigma^2"]["R"].mean()

# %% [markdown]
# ### Exercise 3: ELBO surgery on a finite data set
#
# Section 2 found $I_q(x; z) \approx \log N$ for the low-$\beta$ models. (a) Why can the mutual information
# not exceed $\log N$ when $q(x)$ is uniform on $N$ digits? (b) Predict how $\mathrm{KL}(q(z) \,\|\, p(z))$ of
# the $\beta = 0.25$ model changes if the surgery uses the first $N = 500$ training digits instead of 2,000,
# and check it with `elbo_surgery`.

# %% [markdown]
# <details><summary>Solution</summary>
#
# (a) $I_q(x; z) = H(x) - H(x \mid z)$ with a discrete $x$: $H(x) = \log N$ for the uniform $q(x)$, and
# $H(x \mid z) \ge 0$. It reaches $\log N$ when every code identifies its digit, i.e. when the $N$
# posteriors barely overlap.
#
# (b) The rate $R$ is a mean over digits, so it hardly depends on $N$ (the first 500 digits give a slightly
# different mean than the first 2,000), while for this model $I_q \approx \log N$ at both sizes. So
# $\mathrm{KL}(q(z) \,\|\, p(z)) = R - I_q$ should grow by $\log 2000 - \log 500 = \log 4 \approx 1.39$ nats plus
# the change of $R$. The aggregate posterior of fewer digits is a mixture of fewer, equally narrow bumps:
# farther from the smooth prior. The cell below checks the prediction. The lesson: the split measures the
# aggregate posterior *of the data set used*, and at a high rate its marginal KL is partly a statement about
# $N$.
#
# </details>

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 3: try it yourself first, then run this cell.
mu_tr, lv_tr = encode_dataset(sweep[0.25]["model"], x_train_bin)
small = elbo_surgery(k_ex, mu_tr[:500], lv_tr[:500], num_samples=4)
large = sweep[0.25]["surgery"]
change = float(small.marginal_kl - large.marginal_kl)
predicted = math.log(4) + float(small.kl - large.kl)  # I drops by log 4; R of the first 500 digits differs
for n, g in ((500, small), (2000, large)):
    print(f"N = {n:>4}: R = {float(g.kl):.2f}, I = {float(g.mutual_information):.2f} (log N = {math.log(n):.2f}), "
          f"KL(q(z)||p(z)) = {float(g.marginal_kl):.2f}")  # fmt: skip
print(f"change of KL(q(z)||p(z)): {change:+.2f} nats; predicted log 4 + change of R = {predicted:+.2f}")
assert abs(float(small.mutual_information) - math.log(500)) < 0.05
assert abs(change - predicted) < 0.2

# %% [markdown]
# ### Exercise 4: when does warm-up help?
#
# KL warm-up did nothing for the collapsed model of section 3. Describe a model in which you would expect it
# to help, and what you would measure to show that it did.

# %% [markdown]
# <details><summary>Solution</summary>
#
# Warm-up changes the path of training, not the objective it ends at. It helps when collapse is a *local*
# optimum that training falls into early: with a decoder strong enough to model the data without $z$ (an
# autoregressive decoder, as for text in Bowman et al., 2016, or a PixelCNN decoder on images, Chen et al.,
# 2017), the KL term pushes the posteriors to the prior in the first steps, before the decoder has learned
# to use the code, and the gradient that would teach the encoder is then weak. With $\beta$ small at first,
# the code is used early, and the decoder may keep using it once $\beta = 1$. To show it: train the same
# model with and without warm-up from several seeds, and compare the rate, the active units and the test
# $\log p(x)$ at the end (at $\beta = 1$), with standard errors over the seeds. If the warm-up runs end with a
# higher rate *and* a higher $\log p(x)$, warm-up fixed an optimization problem; if their rate falls back,
# as here, collapse was the optimum.
#
# </details>

# %% [markdown]
# ### Exercise 5: a mixture-of-Gaussians prior
#
# `vae_lib.priors.MixturePrior(16, 50, rngs=...)` is a mixture of 50 Gaussians whose weights, means and
# variances are all learned. Train the model of section 4 with it instead of the VampPrior (same
# initialization, key and epochs) and add its row to the prior table. Which of the VampPrior's effects do you
# expect it to share?

# %% [markdown]
# <details><summary>Solution</summary>
#
# The code below (not run in this chapter: it costs a training run, about as long as the VampPrior's) adds
# the row. What to look at: a mixture can move its mass towards the codes, so the rate's marginal-KL part
# can fall while $I_q$ stays put, as with the VampPrior. Two differences to expect before looking: its 50
# components start as random points, not at encoded digits, and they move only as fast as Adam's steps
# let them, while the VampPrior's components follow the encoder from the first step; and the VampPrior's
# components are tied to the encoder's own posteriors. Whether that makes a difference in 10 epochs is a
# measurement, with a paired standard error as in section 4, and one run says little about the sign of a
# small difference.
#
# ```python
# from vae_lib.priors import MixturePrior
#
# init = vae_lib.mlp_vae(784, LATENT, hidden=HIDDEN, rngs=nnx.Rngs(k_init))
# mog_model = vae_lib.VAE(init.encoder, init.decoder, prior=MixturePrior(LATENT, 50, rngs=nnx.Rngs(0)))
# vae_lib.fit(mog_model, x_train, key=k_fit, epochs=EPOCHS, binarize=True, progress=False)
# d, r = per_digit_elbo(k_eval, mog_model, x_test_bin)
# priors["MoG-50"] = dict(model=mog_model, D=d, R=r, elbo=-(d + r), **latent_report(mog_model))
# priors["MoG-50"]["log_px"] = np.asarray(
#     vae_lib.importance_log_likelihood(k_iwae, mog_model, x_test_bin, num_samples=100)
# )
# # then re-run the printing cell of section 4
# ```
#
# </details>
#
# ## References
#
# - An untitled Chinese-language article on variational autoencoders, the text this course grew out of; its
#   section on challenges mentions that the diversity of a VAE's samples is affected by the added noise,
#   without defining or measuring anything. This chapter measures what the KL term does.
# - A. A. Alemi, B. Poole, I. Fischer, J. V. Dillon, R. A. Saurous and K. Murphy. *Fixing a Broken ELBO.*
#   ICML 2018. arXiv:1711.00464 (rate and distortion, $H - D \le I \le R$).
# - I. Higgins, L. Matthey, A. Pal, C. Burgess, X. Glorot, M. Botvinick, S. Mohamed and A. Lerchner.
#   *β-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework.* ICLR 2017.
# - M. D. Hoffman and M. J. Johnson. *ELBO surgery: yet another way to carve up the variational evidence
#   lower bound.* NIPS 2016 Workshop on Advances in Approximate Bayesian Inference.
# - S. R. Bowman, L. Vilnis, O. Vinyals, A. M. Dai, R. Jozefowicz and S. Bengio. *Generating Sentences from a
#   Continuous Space.* CoNLL 2016. arXiv:1511.06349 (KL annealing, posterior collapse with an RNN decoder).
# - C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby and O. Winther. *Ladder Variational Autoencoders.*
#   NeurIPS 2016. arXiv:1602.02282 (warm-up).
# - D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever and M. Welling. *Improved Variational
#   Inference with Inverse Autoregressive Flow.* NeurIPS 2016. arXiv:1606.04934 (free bits).
# - Y. Burda, R. Grosse and R. Salakhutdinov. *Importance Weighted Autoencoders.* ICLR 2016.
#   arXiv:1509.00519 (active units).
# - X. Chen, D. P. Kingma, T. Salimans, Y. Duan, P. Dhariwal, J. Schulman, I. Sutskever and P. Abbeel.
#   *Variational Lossy Autoencoder.* ICLR 2017. arXiv:1611.02731 (strong decoders ignore the code).
# - J. Lucas, G. Tucker, R. Grosse and M. Norouzi. *Don't Blame the ELBO! A Linear VAE Perspective on
#   Posterior Collapse.* NeurIPS 2019. arXiv:1911.02469.
# - M. E. Tipping and C. M. Bishop. *Probabilistic Principal Component Analysis.* Journal of the Royal
#   Statistical Society B 61(3), 1999.
# - J. M. Tomczak and M. Welling. *VAE with a VampPrior.* AISTATS 2018. arXiv:1705.07120.

# %%
print(
    f"chapter ran in {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
    f"(load average {os.getloadavg()[0]:.1f})"
)
print("python", sys.version.split()[0], "| jax", jax.__version__, "| flax", flax.__version__, "| optax",
      optax.__version__, "| vae_lib", vae_lib.__version__)  # fmt: skip
