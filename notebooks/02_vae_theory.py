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
# # Chapter 2 — The VAE in theory: generative model, ELBO, reparameterization
#
# **What you will learn**
#
# - The generative story of a VAE, $z \sim p(z)$ then $x \sim p_\theta(x \mid z)$, and why the posterior
#   $p_\theta(z \mid x)$ is intractable: it needs the evidence $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$.
# - The evidence lower bound (ELBO), derived twice: with Jensen's inequality, and from the identity
#   $\log p_\theta(x) = \mathrm{ELBO} + \mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$.
# - The reparameterization trick, and why its gradients have a far smaller variance than the
#   score-function (REINFORCE) estimator.
# - The closed-form KL divergence between Gaussians that every VAE uses.
# - Which formulas of the seed article's §3 are wrong, and what they should say.
#
# Every identity is **checked numerically** on a linear-Gaussian model, where $\log p_\theta(x)$ and the
# exact posterior are known in closed form, using the library's `vae_lib.elbo`, `elbo_per_example`,
# `iwae_bound`, `kl_standard_normal` and `kl_gaussians`.
#
# **Prerequisites**: Chapter 1 (autoencoders and their holes). Probability: Gaussian densities, expectations,
# Bayes' rule, the KL divergence $\mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q - \log p] \ge 0$. JAX basics
# (`jax.numpy`, `jax.random` keys, `jax.grad`, `jax.vmap`).
#
# **Notation** (used throughout the course): data $x \in \mathbb{R}^D$, latent code $z \in \mathbb{R}^Z$;
# the prior $p(z) = \mathcal{N}(0, I)$; the decoder $p_\theta(x \mid z)$ with parameters $\theta$; the
# encoder $q_\phi(z \mid x) = \mathcal{N}(\mu, \operatorname{diag} \sigma^2)$ with parameters $\phi$,
# where the network outputs the mean $\mu = \mu_\phi(x)$ and the log-variance $\log \sigma^2 = \log
# \sigma^2_\phi(x)$. Chapters 3 and 4 train this model on toy data and on MNIST digits.

# %%
import math
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vae_lib

plt.rcParams["figure.dpi"] = 80
T_START = time.perf_counter()
key = jax.random.key(0)  # the chapter's one seed; every random draw below uses a key split from it

# %% [markdown]
# ## 1. The generative story
#
# A VAE is first of all a **generative model** with a latent variable. To make a data point:
#
# 1. draw a code from the prior, $z \sim p(z) = \mathcal{N}(0, I)$;
# 2. draw the data point from the decoder's distribution, $x \sim p_\theta(x \mid z)$. For example
#    $p_\theta(x \mid z) = \mathcal{N}(x;\, \mu_\theta(z), \operatorname{diag} \sigma^2_\theta(z))$ for real-valued
#    data, or a product of Bernoullis with logits computed from $z$ for binary pixels. A neural network maps
#    $z$ to the parameters of that distribution.
#
# This defines the **joint** density $p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$. Two more quantities
# follow from it by the rules of probability:
#
# $$
# \underbrace{p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz}_{\text{evidence (marginal likelihood)}}
# \qquad\qquad
# \underbrace{p_\theta(z \mid x) = \frac{p_\theta(x \mid z)\, p(z)}{p_\theta(x)}}_{\text{posterior (Bayes' rule)}} .
# $$
#
# We would like to fit $\theta$ by maximum likelihood, $\max_\theta \sum_n \log p_\theta(x_n)$, and to
# encode a data point by its posterior $p_\theta(z \mid x)$. Both need the integral over $z$. When
# $\mu_\theta$ is a neural network it has no closed form. Numerical quadrature costs exponentially many
# points in $Z$. Averaging $p_\theta(x \mid z)$ over draws from the prior is unbiased but useless in
# practice: almost every $z$ drawn from the prior explains $x$ badly, and the few that explain it well are
# rarely drawn. This is what **intractable** means here.
#
# ### A model where everything is known: the linear-Gaussian model
#
# To check every formula of this chapter against the truth, we use a decoder that is linear:
#
# $$
# p(z) = \mathcal{N}(0, I_Z), \qquad p_\theta(x \mid z) = \mathcal{N}(x;\, W z + b,\, s^2 I_D).
# $$
#
# Then $x = W z + b + s\,\eta$ with $\eta \sim \mathcal{N}(0, I_D)$ independent of $z$, so $x$ is Gaussian with
#
# $$
# p_\theta(x) = \mathcal{N}(x;\, b,\, W W^\top + s^2 I_D),
# $$
#
# and completing the square in $\log p(z) + \log p_\theta(x \mid z)$ gives the exact posterior
#
# $$
# p_\theta(z \mid x) = \mathcal{N}\big(z;\, \mu^*, \Sigma^*\big), \qquad
# \Sigma^* = \big(I_Z + W^\top W / s^2\big)^{-1}, \qquad \mu^* = \Sigma^* W^\top (x - b) / s^2 .
# $$
#
# We choose $W$ with **orthogonal columns**, so $W^\top W$ is diagonal, $\Sigma^*$ is diagonal, and the exact
# posterior is a member of the VAE's diagonal-Gaussian family. (Exercise 2 drops that assumption.) We use
# $D = 4$, $Z = 2$ and $s = 0.5$.

# %%
D, Z, S = 4, 2, 0.5  # data dimension, latent dimension, observation noise standard deviation s
key, key_q, key_b, key_x = jax.random.split(key, 4)
Q, _ = np.linalg.qr(np.asarray(jax.random.normal(key_q, (D, Z)), np.float64))  # (D, Z) orthonormal columns
W = Q * np.array([2.0, 0.7])  # (D, Z) orthogonal columns of lengths 2 and 0.7
b = np.asarray(jax.random.normal(key_b, (D,)), np.float64)  # (D,)


def sample_model(key, n):
    """Ancestral sampling: z ~ p(z), then x ~ p(x|z). Returns x (n, D) and z (n, Z)."""
    key_z, key_eta = jax.random.split(key)
    z = np.asarray(jax.random.normal(key_z, (n, Z)), np.float64)
    x = z @ W.T + b + S * np.asarray(jax.random.normal(key_eta, (n, D)), np.float64)
    return x, z


def log_evidence(x):
    """Exact log p(x) = log N(x; b, W W^T + s^2 I), x (N, D) -> (N,), in float64."""
    cov = W @ W.T + S**2 * np.eye(D)
    _, logdet = np.linalg.slogdet(cov)
    r = x - b
    return -0.5 * (D * math.log(2 * math.pi) + logdet + np.sum(r * np.linalg.solve(cov, r.T).T, axis=1))


def exact_posterior(x):
    """Mean (N, Z) and log-variance (N, Z) of p(z|x); diagonal because W has orthogonal columns."""
    precision = np.eye(Z) + W.T @ W / S**2
    assert np.allclose(precision, np.diag(np.diag(precision)))  # diagonal: orthogonal columns
    var = 1.0 / np.diag(precision)  # (Z,)
    mean = (x - b) @ W / S**2 * var  # (N, Z)
    return mean, np.broadcast_to(np.log(var), mean.shape)


# NBVAL_CHECK_OUTPUT
x_obs, z_true = sample_model(key_x, 5)  # five observed data points, (5, D)
mu_star, logvar_star = exact_posterior(x_obs)
print("log p(x) of the 5 points:", np.round(log_evidence(x_obs), 3))
print("posterior standard deviations:", np.round(np.exp(0.5 * logvar_star[0]), 4))

# %% [markdown]
# Two checks before we use these formulas. First, the evidence: the average of $p_\theta(x \mid z)$ over
# many prior draws should approach $p_\theta(x)$. Second, Bayes' rule: at any $z$,
# $\log p(z) + \log p_\theta(x \mid z) - \log p_\theta(x)$ should equal the log-density of the Gaussian
# posterior. The densities come from `vae_lib.standard_normal_log_prob` and `vae_lib.gaussian_log_prob`.


# %%
def decode(z):
    """The linear decoder as vae_lib expects it: z (N, Z) -> (mean, logvar) of p(x|z), each (N, D)."""
    mean = z @ jnp.asarray(W.T, jnp.float32) + jnp.asarray(b, jnp.float32)
    return mean, jnp.full(mean.shape, math.log(S**2), jnp.float32)


def log_joint(x, z):
    """log p(z) + log p(x|z) for x (N, D), z (N, Z) -> (N,)."""
    z = jnp.asarray(z, jnp.float32)
    mean, logvar = decode(z)
    return vae_lib.standard_normal_log_prob(z) + vae_lib.gaussian_log_prob(
        jnp.asarray(x, jnp.float32), mean, logvar
    )


# (1) The evidence integral by brute force: p(x) ~ mean_k p(x|z_k), z_k ~ p(z), with a million draws.
key, key_mc = jax.random.split(key)
K = 1_000_000
z_prior = jax.random.normal(key_mc, (K, Z))
x0 = x_obs[:1]  # the first data point, (1, D)
log_lik = np.asarray(
    vae_lib.gaussian_log_prob(jnp.asarray(x0, jnp.float32), *decode(z_prior)), np.float64
)  # (K,)
lik = np.exp(log_lik - log_lik.max())
p_hat = lik.mean() * np.exp(log_lik.max())
p_se = lik.std() / math.sqrt(K) * np.exp(log_lik.max())
p_exact = np.exp(log_evidence(x0)[0])
ess = lik.sum() ** 2 / np.sum(lik**2)  # effective number of prior draws that carry the estimate
print(f"p(x): exact {p_exact:.4e}, brute force {p_hat:.4e} +- {p_se:.1e} (one standard error)")
print(f"effective sample size of the brute-force estimate: {ess:.0f} of {K:,} prior draws")

# (2) Bayes' rule, at 1,000 random z.
key, key_z = jax.random.split(key)
z_any = np.asarray(jax.random.normal(key_z, (1000, Z)) * 2.0)
x_rep = np.repeat(x0, 1000, axis=0)
bayes = np.asarray(log_joint(x_rep, z_any)) - log_evidence(x0)[0]
closed = np.asarray(vae_lib.gaussian_log_prob(z_any, mu_star[:1], logvar_star[:1]))
print(f"max |log p(z|x) by Bayes' rule - closed form| = {np.abs(bayes - closed).max():.1e}")

# %%
assert abs(p_hat - p_exact) < 4 * p_se
assert ess < 0.1 * K  # most prior draws contribute (almost) nothing
assert np.allclose(bayes, closed, atol=1e-3)

# %% [markdown]
# The brute-force estimate agrees with the exact evidence within its standard error, but look at the
# effective sample size: fewer than 10% of the million draws carry the estimate; the others land where
# $p_\theta(x \mid z)$ is negligible. Here $Z = 2$ and the posterior is only a few times narrower than the
# prior. With $Z = 32$ and a posterior a hundred times narrower in each direction, essentially no prior draw
# would ever land in it. We need a smarter distribution to draw $z$ from, one concentrated where the
# posterior is. That is the encoder $q_\phi(z \mid x)$.

# %% [markdown]
# ## 2. The evidence lower bound, derived twice
#
# Introduce any density $q_\phi(z \mid x)$ over codes that is positive wherever $p_\theta(x, z)$ is: in
# a VAE, a Gaussian $\mathcal{N}(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x))$ computed by the encoder
# network. It is called the **approximate posterior** or **inference model**.
#
# ### Derivation 1: Jensen's inequality
#
# Multiply and divide by $q_\phi$ inside the evidence integral, then use that $\log$ is concave, so
# $\log \mathbb{E}[Y] \ge \mathbb{E}[\log Y]$ (Jensen's inequality):
#
# $$
# \log p_\theta(x) = \log \int q_\phi(z \mid x)\, \frac{p_\theta(x, z)}{q_\phi(z \mid x)}\, dz
# = \log \mathbb{E}_{q_\phi(z \mid x)}\!\left[\frac{p_\theta(x, z)}{q_\phi(z \mid x)}\right]
# \;\ge\; \mathbb{E}_{q_\phi(z \mid x)}\!\left[\log \frac{p_\theta(x, z)}{q_\phi(z \mid x)}\right]
# =: \mathcal{L}(\theta, \phi; x).
# $$
#
# Splitting $p_\theta(x, z) = p_\theta(x \mid z)\, p(z)$ gives the form every VAE implements:
#
# $$
# \mathcal{L}(\theta, \phi; x)
# = \underbrace{\mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]}_{\text{reconstruction}}
# \;-\; \underbrace{\mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)}_{\text{regularizer}} .
# $$
#
# The first term rewards codes, drawn from the encoder, that let the decoder explain $x$; the second keeps
# the encoder's distribution close to the prior. A VAE **maximizes** $\mathcal{L}$ averaged over the data,
# jointly in $\theta$ and $\phi$ (equivalently, it minimizes $-\mathcal{L}$).
#
# ### Derivation 2: an exact identity
#
# $\log p_\theta(x)$ does not depend on $z$, so it equals its own expectation under $q_\phi$; then write
# $p_\theta(x) = p_\theta(x, z) / p_\theta(z \mid x)$ (Bayes' rule) and multiply and divide by $q_\phi$:
#
# $$
# \log p_\theta(x)
# = \mathbb{E}_{q_\phi(z \mid x)}\!\left[\log \frac{p_\theta(x, z)}{p_\theta(z \mid x)}\right]
# = \mathbb{E}_{q_\phi(z \mid x)}\!\left[\log \frac{p_\theta(x, z)}{q_\phi(z \mid x)}\right]
# + \mathbb{E}_{q_\phi(z \mid x)}\!\left[\log \frac{q_\phi(z \mid x)}{p_\theta(z \mid x)}\right]
# = \mathcal{L}(\theta, \phi; x) + \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big).
# $$
#
# This says more than Jensen's inequality does:
#
# - the gap $\log p_\theta(x) - \mathcal{L}$ is **exactly** the KL divergence from the approximate posterior to
#   the true one. It is $\ge 0$, so $\mathcal{L} \le \log p_\theta(x)$, with **equality if and only if**
#   $q_\phi(z \mid x) = p_\theta(z \mid x)$;
# - $\log p_\theta(x)$ does not depend on $\phi$, so maximizing $\mathcal{L}$ over $\phi$ is the same as
#   minimizing $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$: training the encoder is
#   approximate posterior inference;
# - maximizing over $\theta$ raises a lower bound on $\log p_\theta(x)$: approximate maximum likelihood, as
#   good as the gap is small. (It can also raise $\mathcal{L}$ by shrinking the gap, that is, by moving
#   the true posterior towards what $q_\phi$ can represent.)
#
# ### Checking both on the linear-Gaussian model
#
# For a diagonal Gaussian $q = \mathcal{N}(m, \operatorname{diag} v)$, everything in $\mathcal{L}$ has a closed
# form here. With $w_j$ the $j$-th column of $W$:
#
# $$
# \mathbb{E}_q[\log p_\theta(x \mid z)] = -\frac{D}{2} \log(2 \pi s^2)
# - \frac{1}{2 s^2} \Big( \lVert x - b - W m \rVert^2 + \textstyle\sum_j v_j \lVert w_j \rVert^2 \Big),
# \qquad
# \mathrm{KL}(q \,\|\, p(z)) = \frac{1}{2} \sum_j \big( v_j + m_j^2 - 1 - \log v_j \big)
# $$
#
# (the first because $\mathbb{E}_q \lVert x - b - W z \rVert^2 = \lVert x - b - W m \rVert^2 + \operatorname{tr}(W
# \operatorname{diag}(v) W^\top)$; the second is derived in Section 4). Below, `elbo_closed_form` implements
# these by hand. The library's `vae_lib.elbo_per_example` estimates the same two terms by Monte Carlo, with
# any encoder and decoder passed as plain Python callables: here `encode` returns a fixed $(m, \log v)$,
# and `decode` is the linear decoder above with `likelihood="gaussian"`.


# %%
def elbo_closed_form(x, m, logvar):
    """Exact ELBO of the linear-Gaussian model for q = N(m, diag(exp(logvar))); x (N, D) -> (N,)."""
    v = np.exp(logvar)
    resid = x - b - m @ W.T  # (N, D)
    rec = -0.5 * D * math.log(2 * math.pi * S**2) - 0.5 / S**2 * (
        np.sum(resid**2, axis=1) + v @ np.sum(W**2, axis=0)
    )
    kl = 0.5 * np.sum(v + m**2 - 1.0 - logvar, axis=1)
    return rec - kl


def make_encoder(m, logvar):
    """A 'trained encoder' that returns fixed parameters: x (N, D) -> (m, logvar), each (N, Z)."""
    m, logvar = jnp.asarray(m, jnp.float32), jnp.asarray(logvar, jnp.float32)
    return lambda x: (m, logvar)


# Four approximate posteriors for the five data points, from exact to poor.
candidates = {
    "exact posterior": (mu_star, logvar_star),
    "mean shifted by 0.3": (mu_star + 0.3, logvar_star),
    "variance x 4": (mu_star, logvar_star + math.log(4.0)),
    "the prior N(0, I)": (np.zeros_like(mu_star), np.zeros_like(logvar_star)),
}
log_px = log_evidence(x_obs)
x32 = jnp.asarray(x_obs, jnp.float32)
rows = []
for name, (m, lv) in candidates.items():
    key, key_elbo = jax.random.split(key)
    rec, kl = vae_lib.elbo_per_example(
        key_elbo, x32, make_encoder(m, lv), decode, likelihood="gaussian", num_samples=20_000
    )
    mc = np.asarray(rec - kl, np.float64)  # (5,) Monte Carlo ELBO, 20,000 samples per point
    exact = elbo_closed_form(x_obs, m, lv)  # (5,)
    kl_post = np.asarray(vae_lib.kl_gaussians(m, lv, mu_star, logvar_star), np.float64)  # KL(q || p(z|x))
    rows.append((name, mc, exact, kl_post))
    print(
        f"{name:>20}:  log p(x) - ELBO = {np.mean(log_px - exact):7.4f}   "
        f"KL(q || p(z|x)) = {np.mean(kl_post):7.4f}   "
        f"max |MC ELBO - exact ELBO| = {np.abs(mc - exact).max():.4f}"
    )
print(f"mean log p(x) over the five points: {log_px.mean():.4f}")

# %% [markdown]
# We also need the Monte Carlo standard errors, to show that the library's estimates agree with the exact
# ELBO within them. The reconstruction term is an average of 20,000 independent values of
# $\log p_\theta(x \mid z)$, so its standard error is the standard deviation of $\log p_\theta(x \mid z)$ under $q$,
# divided by $\sqrt{20\,000}$. We get that standard deviation from a separate draw of 20,000 samples,
# made with `vae_lib.reparameterize`.

# %%
for name, mc, exact, kl_post in rows:
    m, lv = candidates[name]
    key, key_sd = jax.random.split(key)
    z = vae_lib.reparameterize(key_sd, jnp.asarray(m, jnp.float32), jnp.asarray(lv, jnp.float32), 20_000)
    sd = np.asarray(jax.vmap(lambda zk: vae_lib.log_likelihood(x32, decode(zk), "gaussian"))(z)).std(axis=0)
    se = sd / math.sqrt(20_000)  # (5,)
    assert np.all(np.abs(mc - exact) < 4 * se + 1e-3), name  # the library's MC ELBO matches the closed form
    assert np.all(exact <= log_px + 1e-9), name  # the ELBO is a lower bound ...
    assert np.allclose(log_px - exact, kl_post, atol=1e-4), name  # ... and the gap is KL(q || p(z|x))
assert np.allclose(rows[0][2], log_px, atol=1e-6)  # equality at the exact posterior
print("checked: ELBO <= log p(x); log p(x) - ELBO = KL(q || p(z|x)); equality at the exact posterior")

# %% [markdown]
# All three claims hold to float precision: the ELBO is below $\log p_\theta(x)$ for every $q$, the gap is
# exactly $\mathrm{KL}(q \,\|\, p_\theta(z \mid x))$ computed by `vae_lib.kl_gaussians`, and it closes at the
# exact posterior. The library's Monte Carlo estimate agrees with the hand-written closed form within four
# standard errors.
#
# At the exact posterior something stronger holds. The ratio $p_\theta(x, z) / q_\phi(z \mid x)$ equals
# $p_\theta(x)$ for **every** $z$, so even a single-sample estimate of the ELBO is exact, *if* the KL term is
# estimated with the same sample rather than in closed form (`analytic_kl=False`). With the closed-form KL,
# the reconstruction term alone still fluctuates.

# %%
key, key_one = jax.random.split(key)
rec1, kl1 = vae_lib.elbo_per_example(
    key_one,
    x32,
    make_encoder(mu_star, logvar_star),
    decode,
    likelihood="gaussian",
    analytic_kl=False,
    num_samples=1,
)
rec1a, kl1a = vae_lib.elbo_per_example(
    key_one, x32, make_encoder(mu_star, logvar_star), decode, likelihood="gaussian", num_samples=1
)
print("log p(x)                          :", np.round(log_px, 4))
print("1-sample ELBO, sampled KL         :", np.round(np.asarray(rec1 - kl1), 4))
print("1-sample ELBO, closed-form KL     :", np.round(np.asarray(rec1a - kl1a), 4))
assert np.allclose(rec1 - kl1, log_px, atol=1e-4)
assert not np.allclose(rec1a - kl1a, log_px, atol=1e-2)

# %% [markdown]
# The training loop does not use the per-example terms directly but their batch means, from `vae_lib.elbo`.
# It returns `ElboTerms(objective, elbo, reconstruction, kl)`. With a KL weight $\beta$ (the $\beta$-VAE),
# `objective` is $\text{reconstruction} - \beta \cdot \mathrm{KL}$ while `elbo` stays the true ELBO.
# With the closed-form KL, its `kl` is exact and `elbo` matches the closed form up to Monte Carlo error.

# %%
key, key_batch = jax.random.split(key)
m, lv = candidates["mean shifted by 0.3"]
terms = vae_lib.elbo(
    key_batch, x32, make_encoder(m, lv), decode, likelihood="gaussian", beta=0.5, num_samples=20_000
)
kl_exact = 0.5 * np.sum(np.exp(lv) + m**2 - 1.0 - lv, axis=1)  # (5,)
print(
    f"objective {float(terms.objective):.4f} = reconstruction {float(terms.reconstruction):.4f} "
    f"- 0.5 * kl {float(terms.kl):.4f}"
)
print(f"elbo {float(terms.elbo):.4f} (exact batch mean {elbo_closed_form(x_obs, m, lv).mean():.4f})")
assert abs(float(terms.kl) - kl_exact.mean()) < 1e-4
assert abs(float(terms.elbo) - elbo_closed_form(x_obs, m, lv).mean()) < 0.05
assert abs(float(terms.objective) - (float(terms.reconstruction) - 0.5 * float(terms.kl))) < 1e-4

# %% [markdown]
# ### A tighter bound: the importance-weighted ELBO
#
# Jensen's gap shrinks if the average inside the log is taken over more samples. With
# $z_1, \dots, z_k \sim q_\phi(z \mid x)$ independently,
#
# $$
# \mathcal{L}_k(x) = \mathbb{E}\left[\log \frac{1}{k} \sum_{i=1}^{k} \frac{p_\theta(x, z_i)}{q_\phi(z_i \mid x)}\right],
# \qquad \mathcal{L}_1 = \mathcal{L} \;\le\; \mathcal{L}_k \;\le\; \mathcal{L}_{k+1} \;\le\; \log p_\theta(x),
# $$
#
# and $\mathcal{L}_k \to \log p_\theta(x)$ as $k \to \infty$ (Burda, Grosse & Salakhutdinov, 2016). The
# library's `vae_lib.iwae_bound` computes one sample of the quantity inside the expectation, with a
# `logsumexp`. We first rebuild it by hand from the same draws, then watch it rise with $k$, using the poor
# posterior "variance x 4" so that the gap is visible, for the first data point, averaged over 2,000 repeats.

# %%
m_poor, lv_poor = candidates["variance x 4"]
enc_poor = make_encoder(m_poor[:1], lv_poor[:1])

# By hand, from the same key: z = reparameterize(key, ...), log w = log p(x, z) - log q(z|x).
key, key_iw = jax.random.split(key)
z_iw = vae_lib.reparameterize(key_iw, *enc_poor(x32[:1]), 16)  # (16, 1, Z)
log_w = log_joint(np.repeat(x0, 16, axis=0), z_iw[:, 0]) - vae_lib.gaussian_log_prob(
    z_iw[:, 0], *enc_poor(x32[:1])
)
by_hand = jax.nn.logsumexp(log_w) - math.log(16)
library = vae_lib.iwae_bound(key_iw, x32[:1], enc_poor, decode, num_samples=16, likelihood="gaussian")[0]
print(f"IWAE_16 by hand {float(by_hand):.5f}, vae_lib.iwae_bound {float(library):.5f}")
assert abs(float(by_hand) - float(library)) < 1e-4

# %%
repeats = 2000
x_many = jnp.repeat(x32[:1], repeats, axis=0)  # (2000, D) the same point, 2,000 independent repeats
enc_many = make_encoder(np.repeat(m_poor[:1], repeats, 0), np.repeat(lv_poor[:1], repeats, 0))
ks = [1, 4, 16, 64, 256, 1024]
iwae = jax.jit(
    lambda key, k: vae_lib.iwae_bound(key, x_many, enc_many, decode, num_samples=k, likelihood="gaussian"),
    static_argnums=1,
)
iwae_mean, iwae_se = [], []
for k in ks:
    key, key_k = jax.random.split(key)
    vals = np.asarray(iwae(key_k, k))  # (2000,) one IWAE_k value per repeat
    iwae_mean.append(vals.mean())
    iwae_se.append(vals.std() / math.sqrt(repeats))
    print(f"k = {k:5d}:  IWAE_k = {vals.mean():8.4f} +- {vals.std() / math.sqrt(repeats):.4f}")
iwae_mean, iwae_se = np.array(iwae_mean), np.array(iwae_se)
elbo_poor, logp0 = elbo_closed_form(x_obs[:1], m_poor[:1], lv_poor[:1])[0], log_px[0]
print(f"exact ELBO {elbo_poor:.4f}, log p(x) {logp0:.4f}")

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.errorbar(ks, iwae_mean, yerr=2 * iwae_se, marker="o", capsize=3, label=r"$\mathcal{L}_k$ (2 s.e. bars)")
ax.axhline(logp0, color="k", ls="--", label=r"$\log p_\theta(x)$ (exact)")
ax.axhline(elbo_poor, color="tab:red", ls=":", label="ELBO (exact)")
ax.set_xscale("log")
ax.set_xlabel("number of importance samples $k$")
ax.set_ylabel("nats")
ax.set_title("The importance-weighted bound rises towards log p(x)")
ax.legend()
plt.show()

# %%
assert abs(iwae_mean[0] - elbo_poor) < 4 * iwae_se[0]  # IWAE_1 is the ELBO
assert np.all(np.diff(iwae_mean) > -3 * np.hypot(iwae_se[1:], iwae_se[:-1]))  # rises with k (up to noise)
assert np.all(iwae_mean < logp0 + 4 * iwae_se)  # never above log p(x)
assert logp0 - iwae_mean[-1] < 0.05 * (logp0 - elbo_poor)  # k = 1024 closes > 95% of the gap

# %% [markdown]
# With $k = 1$ the bound is the ELBO; each increase of $k$ raises it, and at $k = 1024$ it has closed more
# than 95% of the gap to $\log p_\theta(x)$. None of the estimates exceeds $\log p_\theta(x)$ beyond
# noise.
#
# ## 3. The reparameterization trick
#
# Training needs the gradient of the ELBO with respect to the encoder's parameters $\phi$. The trouble is
# the expectation $\mathbb{E}_{q_\phi(z \mid x)}[\,\cdot\,]$: the *distribution* we average over depends on
# $\phi$. Take the simplest instance: a one-dimensional $q = \mathcal{N}(\mu, \sigma^2)$ with parameters
# $\mu$ and $\lambda = \log \sigma^2$, and the gradient of $F(\mu, \lambda) = \mathbb{E}_{z \sim q}[f(z)]$.
#
# **Score-function estimator** (REINFORCE, likelihood ratio). Differentiate the density, not the samples:
#
# $$
# \nabla F = \int f(z)\, \nabla q(z)\, dz = \int f(z)\, q(z)\, \nabla \log q(z)\, dz
# = \mathbb{E}_{z \sim q}\big[f(z)\, \nabla \log q(z)\big],
# \qquad
# \frac{\partial \log q}{\partial \mu} = \frac{z - \mu}{\sigma^2}, \quad
# \frac{\partial \log q}{\partial \lambda} = \frac{(z - \mu)^2}{2 \sigma^2} - \frac{1}{2}.
# $$
#
# It needs only values of $f$, but it multiplies them by a random factor of mean zero, so its variance is
# large, and larger still when $f$ is large.
#
# **Reparameterization estimator** (Kingma & Welling 2014; Rezende et al. 2014). Write the sample as a
# differentiable function of the parameters and of noise that does not depend on them:
#
# $$
# z = \mu + \sigma\, \varepsilon, \quad \varepsilon \sim \mathcal{N}(0, 1), \quad \sigma = e^{\lambda/2}
# \quad\Longrightarrow\quad
# \nabla F = \mathbb{E}_{\varepsilon}\big[\nabla f(\mu + \sigma \varepsilon)\big], \qquad
# \frac{\partial z}{\partial \mu} = 1, \quad \frac{\partial z}{\partial \lambda} = \frac{\sigma \varepsilon}{2}.
# $$
#
# The randomness now sits in $\varepsilon$, outside the parameters, and the gradient flows through $f$ by
# the chain rule. This is exactly what `vae_lib.reparameterize(key, mean, logvar)` does, and `jax.grad`
# differentiates through it.
#
# We compare the two on $f(z) = z^2$ with $\mu = 1$ and $\sigma^2 = 0.5$. The exact answer is known:
# $F = \mu^2 + \sigma^2 = \mu^2 + e^\lambda$, so $\partial F / \partial \mu = 2\mu = 2$ and
# $\partial F / \partial \lambda = e^\lambda = 0.5$. Each estimator is run 100,000 times, one sample each.


# %%
def f(z):
    return jnp.sum(z**2)


mu0 = jnp.array([1.0])
lam0 = jnp.log(jnp.array([0.5]))
exact_grad = np.array([2.0 * 1.0, 0.5])  # (dF/dmu, dF/dlambda)


def reparam_grad(key):
    """One-sample reparameterization gradient, via vae_lib.reparameterize and jax.grad."""
    return jnp.concatenate(
        jax.grad(lambda m, lam: f(vae_lib.reparameterize(key, m, lam)), argnums=(0, 1))(mu0, lam0)
    )


def score_grad(key):
    """One-sample score-function gradient: f(z) * grad log q(z), z held fixed."""
    z = vae_lib.reparameterize(key, mu0, lam0)  # a sample; no gradient flows through it below
    z = jax.lax.stop_gradient(z)
    score = jax.grad(lambda m, lam: vae_lib.gaussian_log_prob(z, m, lam), argnums=(0, 1))(mu0, lam0)
    return f(z) * jnp.concatenate(score)


n_rep = 100_000
key, key_g = jax.random.split(key)
keys = jax.random.split(key_g, n_rep)
g_reparam = np.asarray(jax.jit(jax.vmap(reparam_grad))(keys), np.float64)  # (n_rep, 2)
g_score = np.asarray(jax.jit(jax.vmap(score_grad))(keys), np.float64)  # (n_rep, 2), same noise
for name, g in [("reparameterization", g_reparam), ("score function", g_score)]:
    se = g.std(axis=0) / math.sqrt(n_rep)
    print(
        f"{name:>18}: mean {np.round(g.mean(axis=0), 4)} +- {np.round(se, 4)}   "
        f"variance per sample {np.round(g.var(axis=0), 3)}"
    )
print(f"{'exact':>18}: {exact_grad}")
var_ratio = g_score.var(axis=0) / g_reparam.var(axis=0)
print("variance ratio score / reparameterization (for mu, for log-variance):", np.round(var_ratio, 1))

# %%
for g in (g_reparam, g_score):
    assert np.all(np.abs(g.mean(axis=0) - exact_grad) < 4 * g.std(axis=0) / math.sqrt(n_rep))  # unbiased
assert np.all(var_ratio > 5), var_ratio

# %% [markdown]
# Both estimators are unbiased: their means agree with the exact gradient within four standard errors.
# But the score-function estimator's variance is more than five times larger for both parameters (the
# ratios are printed above), so it needs more than five times as many samples for the same accuracy. With a decoder network for
# $f$ and hundreds of latent dimensions, the gap grows by orders of magnitude. The reparameterization
# gradient uses the *derivative* of $f$, which tells it which way to move $z$; the score-function
# estimator only sees the *values* of $f$, and has to find the direction by correlating them with random
# perturbations.
#
# The VAE's ELBO estimator is the reparameterized one: draw $\varepsilon \sim \mathcal{N}(0, I)$, set
# $z = \mu_\phi(x) + \sigma_\phi(x) \odot \varepsilon$, and backpropagate
# $\log p_\theta(x \mid z) - \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$ through both networks.
#
# ### What is random in a VAE (and what is not)
#
# The seed article says a VAE works by "adding random noise" to get "diversity and generalization", and
# that the encoder outputs "the mean and variance of random noise $e$". That is not what happens:
#
# - The **latent variable $z$ is random** in the model: $z \sim p(z)$ when generating, $z \sim q_\phi(z \mid x)$
#   when encoding. The encoder outputs the mean $\mu_\phi(x)$ and log-variance $\log \sigma^2_\phi(x)$ **of the
#   code's distribution** $q_\phi(z \mid x)$, the model's uncertainty about which code explains $x$. It does
#   not output the parameters of a noise source.
# - The only "noise" is $\varepsilon \sim \mathcal{N}(0, I)$ in $z = \mu + \sigma \odot \varepsilon$. It has
#   no parameters and is nothing more than the device that draws a sample of $z$ differentiably, for a
#   **Monte Carlo estimate** of the expectation in the ELBO. It is not added to the data or to the output.
# - The **data are random** too, $x \sim p_\theta(x \mid z)$; pictures of "samples" usually show the
#   decoder's mean $\mathbb{E}[x \mid z]$ instead of a draw.
# - The **diversity of generated samples comes from the prior**: different $z \sim p(z)$ decode to different
#   outputs. What makes that work is the KL term, which makes the codes of the data cover the prior (the
#   holes of Chapter 1 close), not any added noise.
#
# ## 4. The KL divergence between Gaussians, in closed form
#
# For $q = \mathcal{N}(\mu, \sigma^2)$ and $p = \mathcal{N}(0, 1)$ in one dimension, use
# $\mathbb{E}_q[(z - \mu)^2] = \sigma^2$ and $\mathbb{E}_q[z^2] = \mu^2 + \sigma^2$:
#
# $$
# \mathbb{E}_q[\log q(z)] = -\tfrac{1}{2}\big(\log 2\pi + \log \sigma^2 + 1\big), \qquad
# \mathbb{E}_q[\log p(z)] = -\tfrac{1}{2}\big(\log 2\pi + \mu^2 + \sigma^2\big),
# $$
#
# $$
# \mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q(z) - \log p(z)] = \tfrac{1}{2}\big(\mu^2 + \sigma^2 - 1 - \log \sigma^2\big).
# $$
#
# A diagonal Gaussian in $Z$ dimensions is a product of independent coordinates, so the KL is the sum of
# this over the coordinates:
# $\mathrm{KL}(\mathcal{N}(\mu, \operatorname{diag} \sigma^2) \,\|\, \mathcal{N}(0, I)) = \frac{1}{2} \sum_{j=1}^{Z}
# (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)$. It is zero exactly when $\mu = 0$ and $\sigma^2 = 1$. The same
# steps against $\mathcal{N}(\mu_p, \sigma_p^2)$ give
# $\frac{1}{2}\big(\log \sigma_p^2 - \log \sigma^2 + (\sigma^2 + (\mu - \mu_p)^2) / \sigma_p^2 - 1\big)$ per
# coordinate, the formula of `vae_lib.kl_gaussians` that Section 2 used for $\mathrm{KL}(q \,\|\, p_\theta(z \mid x))$.
#
# We check the formula three ways: by hand, with `vae_lib.kl_standard_normal`, and by Monte Carlo
# ($\mathbb{E}_q[\log q - \log p]$ averaged over 200,000 draws, with its standard error).

# %%
key, key_mu, key_lv, key_kl = jax.random.split(key, 4)
mu_q = jax.random.normal(key_mu, (3, 4))  # three diagonal Gaussians in 4 dimensions
logvar_q = 0.8 * jax.random.normal(key_lv, (3, 4))
kl_hand = 0.5 * np.sum(
    np.asarray(mu_q) ** 2 + np.exp(np.asarray(logvar_q)) - 1.0 - np.asarray(logvar_q), axis=1
)
kl_lib = np.asarray(vae_lib.kl_standard_normal(mu_q, logvar_q))
z_kl = vae_lib.reparameterize(key_kl, mu_q, logvar_q, 200_000)  # (200000, 3, 4)
log_ratio = np.asarray(
    vae_lib.gaussian_log_prob(z_kl, mu_q, logvar_q) - vae_lib.standard_normal_log_prob(z_kl)
)
kl_mc, kl_se = log_ratio.mean(axis=0), log_ratio.std(axis=0) / math.sqrt(200_000)
kl_general = np.asarray(vae_lib.kl_gaussians(mu_q, logvar_q, jnp.zeros(4), jnp.zeros(4)))
print("by hand          :", np.round(kl_hand, 4))
print("kl_standard_normal:", np.round(kl_lib, 4))
print("kl_gaussians      :", np.round(kl_general, 4))
print("Monte Carlo      :", np.round(kl_mc, 4), "+-", np.round(kl_se, 4))
assert np.allclose(kl_hand, kl_lib, rtol=1e-5) and np.allclose(kl_lib, kl_general, rtol=1e-5)
assert np.all(np.abs(kl_mc - kl_lib) < 4 * kl_se)

# %% [markdown]
# ## 5. What the seed article's §3 gets wrong
#
# The seed article (§3.2, "the mathematical model of the VAE") writes the model down in five formulas. Each
# is wrong. Here they are, quoted with the article's own symbols, with corrections.
#
# 1. **The encoder (§3.2.1).** The article writes $p_\theta(z \mid x) = p_\theta(z)\, p_\theta(x \mid z)$ and
#    calls $p_\theta(x \mid z)$ "the generative model, usually a standard normal". The right-hand side is the
#    **joint** density $p_\theta(x, z)$, not a conditional. By Bayes' rule
#    $p_\theta(z \mid x) = p_\theta(z)\, p_\theta(x \mid z) / p_\theta(x)$, and that division by the
#    intractable evidence is the whole difficulty. The VAE's encoder is a **separate** distribution
#    $q_\phi(z \mid x) = \mathcal{N}(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x))$ with its own
#    parameters $\phi$, trained to approximate $p_\theta(z \mid x)$. And $p_\theta(x \mid z)$ is not a
#    standard normal: it is a Gaussian or Bernoulli whose parameters the decoder network computes from $z$.
#    Finally, $p(z)$ is the prior over the **latent code**, not "the distribution of random noise"; in the
#    standard VAE it is fixed, $\mathcal{N}(0, I)$, with no parameters.
# 2. **The decoder (§3.2.2).** The article writes $p_\theta(x \mid z) = p_\theta(x)\, p_\theta(z \mid x)$.
#    That is again the joint $p_\theta(x, z)$. It is also circular: it defines the decoder through the
#    posterior, which was itself "defined" through the decoder in item 1. The decoder is specified
#    **directly**, for example
#    $p_\theta(x \mid z) = \mathcal{N}(x;\, \mu_\theta(z), \operatorname{diag} \sigma^2_\theta(z))$, and its input
#    is the code $z$ alone, not "$z$ and the mean and variance of the noise $e$".
# 3. **The generative model (§3.2.3).** The article writes $p_\theta(x) = p_\theta(x \mid z)\, p_\theta(z)$.
#    The integral over $z$ is missing; the right-hand side is once more the joint. The evidence is
#    $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$ (Section 1). The "generative model" is not a third
#    network either: it is the prior and the decoder together, and one generates by decoding
#    $z \sim p(z)$ with the trained decoder. (The seed's code defines a separate `Generator` layer with its
#    own weights that is never used or trained, and its `generate_images` feeds the noise into the whole
#    model, encoder first, instead of into the decoder.)
# 4. **The objective (§3.2.4).** The article writes
#    $\mathcal{L}(\theta) = \mathbb{E}_{p_\theta(z \mid x)}\big[\log \frac{p_\theta(x \mid z)}{p_\theta(x)}\big] -
#    \mathrm{KL}[q_\phi(z \mid x) \,\|\, p_\theta(z)]$. Three errors. The expectation must be under the
#    encoder $q_\phi(z \mid x)$, since the true posterior is exactly what we cannot compute. The ratio
#    $p_\theta(x \mid z) / p_\theta(x)$ must be just $p_\theta(x \mid z)$. And the objective depends on
#    $\phi$ as well as $\theta$. The correct objective is
#    $$
#    \mathcal{L}(\theta, \phi; x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big] -
#    \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big),
#    $$
#    the ELBO of Section 2. The article's first term is in fact a different, well-defined quantity: by Bayes'
#    rule $p_\theta(x \mid z) / p_\theta(x) = p_\theta(z \mid x) / p(z)$, so it equals
#    $\mathrm{KL}(p_\theta(z \mid x) \,\|\, p(z))$, which is $\ge 0$ and is no bound on anything we want
#    (Exercise 3 computes it). The article also describes the terms as "the difference between the encoder
#    and the decoder" and "between the generative model and the real data"; they are the expected
#    reconstruction log-likelihood and the KL divergence from the approximate posterior to the prior.
# 5. **The optimization (§3.2.5).** The article says gradient descent "minimizes the objective", with
#    $\theta \leftarrow \theta - \alpha \nabla_\theta \mathcal{L}$ and
#    $\phi \leftarrow \phi - \beta \nabla_\phi \mathcal{L}(\theta)$, and calls these update rules
#    "probability models". The ELBO is a lower bound to be **maximized**: gradient *ascent*
#    $\theta \leftarrow \theta + \alpha \nabla_\theta \mathcal{L}$, or equivalently descent on the loss
#    $-\mathcal{L}$. (It writes $\nabla_\phi \mathcal{L}(\theta)$ of a function it has declared to depend on
#    $\theta$ only.) In practice one optimizer (Adam) with one learning rate updates $\theta$ and $\phi$
#    together, from the gradient of the same loss, averaged over a minibatch. The symbol $\beta$ for a second
#    learning rate clashes with its standard meaning in the VAE literature, the weight of the KL term
#    ($\beta$-VAE; `vae_lib.elbo(..., beta=...)`). Update rules are optimization steps, not probability
#    models.
#
# The same section's description of the "structure" (§3.1) repeats the noise misconception addressed in
# Section 3 above: the encoder outputs the mean and variance of $q_\phi(z \mid x)$, and the only noise is the
# parameter-free $\varepsilon$ of the reparameterization. Chapter 3 takes on the article's TensorFlow code
# (§4).

# %% [markdown]
# ## Summary
#
# - A VAE is a latent-variable generative model $p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$. Its evidence
#   $p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$ and posterior $p_\theta(z \mid x)$ are intractable for a
#   neural decoder; sampling $z$ from the prior to estimate the evidence wastes almost every draw.
# - An approximate posterior $q_\phi(z \mid x)$ gives the ELBO
#   $\mathcal{L} = \mathbb{E}_{q_\phi}[\log p_\theta(x \mid z)] - \mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$,
#   a lower bound by Jensen's inequality. Exactly,
#   $\log p_\theta(x) = \mathcal{L} + \mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$, so the bound is tight
#   at the true posterior and maximizing it over $\phi$ is approximate inference. We checked both, to float
#   precision, on a linear-Gaussian model, with `vae_lib.elbo_per_example` and `vae_lib.kl_gaussians`.
# - The importance-weighted bound $\mathcal{L}_k$ (`vae_lib.iwae_bound`) rises from the ELBO ($k = 1$) towards
#   $\log p_\theta(x)$.
# - The reparameterization $z = \mu + \sigma \odot \varepsilon$ turns the gradient of an expectation into an
#   expectation of gradients. Like the score-function estimator it is unbiased, but its variance is much
#   lower. The only noise in a VAE is this parameter-free $\varepsilon$, a Monte Carlo device.
# - $\mathrm{KL}(\mathcal{N}(\mu, \operatorname{diag} \sigma^2) \,\|\, \mathcal{N}(0, I)) = \frac{1}{2} \sum_j
#   (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)$ (`vae_lib.kl_standard_normal`).
#
# ## Exercises
#
# **Exercise 1 (baselines for the score-function estimator).** $\mathbb{E}_q[\nabla \log q(z)] = 0$, so
# replacing $f(z)$ by $f(z) - c$ in the score-function estimator leaves it unbiased for any constant $c$.
# (a) Show that adding a constant to $f$ (say $f(z) = z^2 + 10$) leaves the reparameterization estimator
# unchanged but inflates the score-function estimator's variance. (b) Use the baseline $c = F(\mu, \lambda)$
# (here known exactly). How do the variances compare now?
#
# **Exercise 2 (the mean-field gap).** Give $W$ non-orthogonal columns, so the exact posterior has a full
# covariance $\Sigma^*$ that no diagonal $q$ can match. The diagonal Gaussian that maximizes the ELBO has mean
# $\mu^*$ and variances $v_j = 1 / \Lambda_{jj}$, where $\Lambda = (\Sigma^*)^{-1}$ is the posterior precision.
# Compute its gap $\log p_\theta(x) - \mathcal{L}$ and check that it equals
# $\mathrm{KL}(q \,\|\, p_\theta(z \mid x))$, computed with NumPy for the full covariance. Is matching the
# posterior's *marginal* variances $\Sigma^*_{jj}$ better or worse?
#
# **Exercise 3 (the seed's first term).** Show that
# $\mathbb{E}_{p_\theta(z \mid x)}\big[\log \frac{p_\theta(x \mid z)}{p_\theta(x)}\big] = \mathrm{KL}(p_\theta(z \mid x) \,\|\, p(z))$,
# compute it for the five data points of the linear-Gaussian model, and compare it with $\log p_\theta(x)$
# and the ELBO.
#
# ### Solutions
#
# **Solution 1.** (a) The reparameterization gradient of $f + 10$ is that of $f$ (a constant has zero
# derivative), while the score-function estimator multiplies the larger values $f(z) + 10$ by the
# zero-mean score, so its variance grows roughly like $(f + 10)^2$. (b) With the baseline, the
# score-function estimator multiplies only the fluctuation $f(z) - F$ by the score, and its variance drops
# (by more than a fifth for both parameters here). It is still above the reparameterization estimator's;
# the baseline does not give it the derivative information that reparameterization uses.


# %%
def score_grad_with(key, shift, baseline):
    z = jax.lax.stop_gradient(vae_lib.reparameterize(key, mu0, lam0))
    score = jax.grad(lambda m, lam: vae_lib.gaussian_log_prob(z, m, lam), argnums=(0, 1))(mu0, lam0)
    return (f(z) + shift - baseline) * jnp.concatenate(score)


def reparam_grad_with(key, shift):
    return jnp.concatenate(
        jax.grad(lambda m, lam: f(vae_lib.reparameterize(key, m, lam)) + shift, argnums=(0, 1))(mu0, lam0)
    )


F_exact = 1.0**2 + 0.5  # E[z^2] = mu^2 + sigma^2
key, key_e1 = jax.random.split(key)
keys_e1 = jax.random.split(key_e1, n_rep)
variants = {
    "reparameterization, f + 10": jax.vmap(lambda k: reparam_grad_with(k, 10.0))(keys_e1),
    "score function, f": jax.vmap(lambda k: score_grad_with(k, 0.0, 0.0))(keys_e1),
    "score function, f + 10": jax.vmap(lambda k: score_grad_with(k, 10.0, 0.0))(keys_e1),
    "score function, f - F (baseline)": jax.vmap(lambda k: score_grad_with(k, 0.0, F_exact))(keys_e1),
}
variances = {}
for name, g in variants.items():
    g = np.asarray(g, np.float64)
    variances[name] = g.var(axis=0)
    assert np.all(np.abs(g.mean(axis=0) - exact_grad) < 4 * g.std(axis=0) / math.sqrt(n_rep)), name
    print(f"{name:>34}: mean {np.round(g.mean(axis=0), 3)}, variance {np.round(g.var(axis=0), 3)}")
assert np.all(variances["score function, f + 10"] > 4 * variances["score function, f"])
assert np.all(variances["score function, f - F (baseline)"] < 0.8 * variances["score function, f"])
assert np.all(variances["score function, f - F (baseline)"] > variances["reparameterization, f + 10"])

# %% [markdown]
# **Solution 2.** For a Gaussian target, maximizing the ELBO over diagonal $q$ means minimizing
# $\mathrm{KL}(q \,\|\, p_\theta(z \mid x))$. Setting its derivatives to zero gives mean $\mu^*$ and
# variances $1 / \Lambda_{jj}$. Those are *smaller* than the marginal variances $\Sigma^*_{jj}$: the
# reverse KL makes $q$ under-cover a correlated posterior. The gap is positive and equals the KL, computed
# with the full-covariance formula
# $\mathrm{KL}(\mathcal{N}(m, V) \,\|\, \mathcal{N}(\mu^*, \Sigma^*)) = \frac{1}{2}\big(\operatorname{tr}(\Lambda V) +
# (\mu^* - m)^\top \Lambda (\mu^* - m) - Z + \log \det \Sigma^* - \log \det V\big)$. Matching the marginal
# variances gives a gap more than twice as large. The Monte Carlo ELBO from `vae_lib.elbo_per_example` confirms the closed
# forms.

# %%
key, key_x2, key_e2 = jax.random.split(key, 3)
W2 = Q @ np.array([[2.0, 1.5], [0.0, 0.7]])  # columns 2 q1 and 1.5 q1 + 0.7 q2: far from orthogonal
cov_x = W2 @ W2.T + S**2 * np.eye(D)
x2 = np.asarray(jax.random.multivariate_normal(key_x2, jnp.asarray(b), jnp.asarray(cov_x), (1,)), np.float64)
r2 = (x2 - b)[0]
log_px2 = -0.5 * (D * math.log(2 * math.pi) + np.linalg.slogdet(cov_x)[1] + r2 @ np.linalg.solve(cov_x, r2))
Lam = np.eye(Z) + W2.T @ W2 / S**2  # posterior precision, full
Sig = np.linalg.inv(Lam)
mu2 = Sig @ W2.T @ r2 / S**2


def elbo_linear(m, v, Wm):
    rec = -0.5 * D * math.log(2 * math.pi * S**2) - 0.5 / S**2 * (
        np.sum((r2 - Wm @ m) ** 2) + v @ np.sum(Wm**2, 0)
    )
    return rec - 0.5 * np.sum(v + m**2 - 1 - np.log(v))


def kl_full(m, v):
    """KL(N(m, diag v) || N(mu2, Sig)) with NumPy."""
    d = mu2 - m
    return 0.5 * (
        np.trace(Lam @ np.diag(v)) + d @ Lam @ d - Z + np.linalg.slogdet(Sig)[1] - np.sum(np.log(v))
    )


def decode2(z):
    mean = z @ jnp.asarray(W2.T, jnp.float32) + jnp.asarray(b, jnp.float32)
    return mean, jnp.full(mean.shape, math.log(S**2), jnp.float32)


for name, v in [("variances 1 / Lambda_jj", 1 / np.diag(Lam)), ("marginal variances Sigma_jj", np.diag(Sig))]:
    exact = elbo_linear(mu2, v, W2)
    key_e2, key_mc2 = jax.random.split(key_e2)
    rec, kl = vae_lib.elbo_per_example(
        key_mc2,
        jnp.asarray(x2, jnp.float32),
        make_encoder(mu2[None], np.log(v)[None]),
        decode2,
        likelihood="gaussian",
        num_samples=50_000,
    )
    print(
        f"{name:>28}: gap log p(x) - ELBO = {log_px2 - exact:.4f}, KL(q || p(z|x)) = {kl_full(mu2, v):.4f}, "
        f"MC ELBO {float(rec[0] - kl[0]):.3f} vs exact {exact:.3f}"
    )
    assert abs((log_px2 - exact) - kl_full(mu2, v)) < 1e-6
    assert abs(float(rec[0] - kl[0]) - exact) < 0.05
assert np.all(1 / np.diag(Lam) <= np.diag(Sig))  # the optimal diagonal q under-covers
gap_best = log_px2 - elbo_linear(mu2, 1 / np.diag(Lam), W2)
gap_marg = log_px2 - elbo_linear(mu2, np.diag(Sig), W2)
print(f"posterior correlation of z_1 and z_2: {Sig[0, 1] / np.sqrt(Sig[0, 0] * Sig[1, 1]):.2f}")
assert 0 < gap_best < 0.5 * gap_marg

# %% [markdown]
# **Solution 3.** By Bayes' rule $p_\theta(x \mid z) / p_\theta(x) = p_\theta(z \mid x) / p(z)$, so the
# expectation under $p_\theta(z \mid x)$ of its log is $\mathrm{KL}(p_\theta(z \mid x) \,\|\, p(z))$, the
# information the data point gives about its code. It is non-negative, while $\log p_\theta(x)$ and the ELBO
# here are negative. It bounds neither, and maximizing it would just reward posteriors far from the prior.
# In the linear-Gaussian model it has a closed form (`vae_lib.kl_gaussians`, the posterior being diagonal),
# and a Monte Carlo average of $\log p_\theta(x \mid z) - \log p_\theta(x)$ over posterior draws agrees
# with it.

# %%
seed_term = np.asarray(vae_lib.kl_gaussians(mu_star, logvar_star, jnp.zeros(Z), jnp.zeros(Z)), np.float64)
key, key_e3 = jax.random.split(key)
z_post = vae_lib.reparameterize(
    key_e3, jnp.asarray(mu_star, jnp.float32), jnp.asarray(logvar_star, jnp.float32), 100_000
)
lr = (
    np.asarray(jax.vmap(lambda zk: vae_lib.log_likelihood(x32, decode(zk), "gaussian"))(z_post), np.float64)
    - log_px
)
print("seed's first term, closed form:", np.round(seed_term, 3))
print(
    "seed's first term, Monte Carlo:",
    np.round(lr.mean(axis=0), 3),
    "+-",
    np.round(lr.std(axis=0) / math.sqrt(100_000), 3),
)
print("log p(x)                      :", np.round(log_px, 3))
assert np.all(np.abs(lr.mean(axis=0) - seed_term) < 4 * lr.std(axis=0) / math.sqrt(100_000) + 1e-3)
assert np.all(seed_term > 0) and np.all(log_px < 0)

# %% [markdown]
# ## References
#
# - D. P. Kingma and M. Welling. *Auto-Encoding Variational Bayes.* ICLR 2014. arXiv:1312.6114.
# - D. J. Rezende, S. Mohamed and D. Wierstra. *Stochastic Backpropagation and Approximate Inference in
#   Deep Generative Models.* ICML 2014. arXiv:1401.4082.
# - D. P. Kingma and M. Welling. *An Introduction to Variational Autoencoders.* Foundations and Trends in
#   Machine Learning 12(4), 2019. arXiv:1906.02691. (Chapter 2 derives the ELBO both ways; §2.4 the
#   reparameterization trick.)
# - Y. Burda, R. Grosse and R. Salakhutdinov. *Importance Weighted Autoencoders.* ICLR 2016. arXiv:1509.00519.
# - S. Mohamed, M. Rosca, M. Figurnov and A. Mnih. *Monte Carlo Gradient Estimation in Machine Learning.*
#   JMLR 21(132), 2020 (score-function and pathwise estimators, baselines).

# %%
import flax  # noqa: E402
import optax  # noqa: E402

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
