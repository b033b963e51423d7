"""Training (layer 4): whole epochs compiled with ``jax.lax.scan``, Optax, checkpoints and resume.

``fit`` trains a ``VAE`` in place. Each epoch is one call of one jitted function: shuffling, batch
gathering, dynamic binarization, the forward and backward passes and the Adam updates of every batch run
inside XLA with no round trip to Python; the parameter and optimizer buffers are donated, so XLA updates
them in place. The loss is ``-objective`` of ``vae_lib.objectives.elbo`` (sum over data and latent
dimensions, mean over the batch).

Reproducibility: epoch ``e`` uses the key ``fold_in(key, e)``, so the same key gives the same run, and a
run resumed from a checkpoint after epoch ``n`` is bitwise identical to one that was never interrupted.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tqdm import tqdm

from vae_lib import _checks
from vae_lib.checkpoint import load_checkpoint, save_checkpoint
from vae_lib.evaluation import evaluate_elbo
from vae_lib.objectives import elbo

History = dict[str, list[float]]


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or gradient; the model holds the last finite parameters."""

    def __init__(self, message: str, step: int, history: History):
        super().__init__(message)
        self.step = step
        self.history = history


def _epoch_fn(graphdef, tx, *, likelihood, beta, analytic_kl, binarize, batch_size, num_batches):
    """Build the jitted function that runs one epoch: ``(params, opt_state, key, x) -> ...``."""

    def loss_fn(params, key, xb):
        model = nnx.merge(graphdef, params)
        if binarize:
            key, kb = jax.random.split(key)
            xb = jax.random.bernoulli(kb, xb).astype(xb.dtype)  # dynamic binarization
        terms = elbo(key, xb, model.encode, model.decode, likelihood=likelihood, beta=beta, analytic_kl=analytic_kl)
        return -terms.objective, terms.elbo

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    keep_if = lambda ok, new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def run_epoch(params, opt_state, key, x):
        def step(carry, inputs):
            params, opt_state, bad = carry
            i, idx, k = inputs
            (loss, elbo_value), grads = grad_fn(params, k, x[idx])  # batch (B, D) gathered inside XLA
            updates, new_opt_state = tx.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            # After a non-finite loss or gradient, every later update of the epoch is skipped.
            ok = (bad < 0) & jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
            carry = (keep_if(ok, new_params, params), keep_if(ok, new_opt_state, opt_state),
                     jnp.where((bad < 0) & ~ok, i, bad))
            return carry, (loss, elbo_value)

        kperm, ksteps = jax.random.split(key)
        perm = jax.random.permutation(kperm, x.shape[0])[: num_batches * batch_size]
        batches = perm.reshape(num_batches, batch_size)  # the last partial batch is dropped
        keys = jax.random.split(ksteps, num_batches)
        (params, opt_state, bad), (losses, elbos) = jax.lax.scan(
            step, (params, opt_state, jnp.int32(-1)), (jnp.arange(num_batches), batches, keys)
        )
        return params, opt_state, bad, losses, elbos

    return run_epoch


def fit(
    model,
    x_train: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    beta: float = 1.0,
    analytic_kl: bool = True,
    binarize: bool = False,
    x_test: jax.Array | None = None,
    optimizer: optax.GradientTransformation | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> History:
    """Train ``model`` (a ``VAE``) in place by maximizing the (beta-)ELBO with Adam.

    Args:
      model: a ``vae_lib.models.VAE``; updated in place.
      x_train: training data, shape ``(N, D)``. For a Bernoulli decoder it must be binary, or grey levels
        in [0, 1] with ``binarize=True`` (a fresh binarization each time a batch is drawn).
      key: PRNG key; the same key gives the same run.
      epochs: total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step; the last partial batch of each epoch is dropped.
      learning_rate: Adam's step size (ignored when ``optimizer`` is given).
      beta: KL weight; the history's ``elbo`` entries are always the true ELBO.
      analytic_kl: closed-form KL (default) or its Monte Carlo estimate.
      binarize: dynamic binarization of training batches.
      x_test: optional held-out data, evaluated after every epoch (must be binary for Bernoulli).
      optimizer: an Optax transformation to use instead of ``optax.adam(learning_rate)``.
      checkpoint_path: if given, the full state (parameters, optimizer state, key, epoch, history) is
        written there after every epoch.
      resume: continue from ``checkpoint_path`` if it exists.
      progress: show a progress bar with the running loss.

    Returns:
      The history: per-epoch lists ``epoch``, ``train_loss`` (mean ``-objective`` over the epoch's steps),
      ``train_elbo`` and, with ``x_test``, ``test_elbo``, ``test_reconstruction``, ``test_kl``; and
      ``seconds`` (wall time of the epoch, evaluation included).

    Raises:
      NonFiniteLossError: a loss or gradient became NaN or infinite. The model then holds the parameters
        from just before that step and the error says at which step it happened.
    """
    key = _checks.key("key", key)
    epochs = _checks.positive_int("epochs", epochs)
    x_train = _checks.array("x_train", x_train, ndim=2)
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batch_size > x_train.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) must not exceed the number of training examples ({x_train.shape[0]})")
    beta = _checks.real("beta", beta, minimum=0.0)
    if optimizer is None:
        learning_rate = _checks.real("learning_rate", learning_rate, minimum=0.0, strict=True)
        optimizer = optax.adam(learning_rate)
    likelihood = model.likelihood
    if likelihood == "bernoulli":
        _checks.in_unit_interval("x_train", x_train)
        if not binarize and not _checks.is_binary(x_train):
            raise ValueError(
                "x_train has grey levels but the decoder is Bernoulli, whose likelihood is defined for "
                "binary data; pass binarize=True (dynamic binarization) or binarize the data first"
            )
    if x_test is not None:
        x_test = _checks.array("x_test", x_test, ndim=2)
        if x_test.shape[1] != x_train.shape[1]:
            raise ValueError(f"x_test must have {x_train.shape[1]} columns like x_train, got {x_test.shape[1]}")
        if likelihood == "bernoulli" and not _checks.is_binary(x_test):
            raise ValueError(
                "x_test must be binary for a Bernoulli decoder (its ELBO is not defined on grey levels); "
                "binarize it once with a fixed key, e.g. vae_lib.data.binarize(jax.random.key(0), x_test)"
            )
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")

    graphdef, params = nnx.split(model)
    opt_state = optimizer.init(params)
    num_batches = x_train.shape[0] // batch_size
    run_epoch = _epoch_fn(
        graphdef, optimizer, likelihood=likelihood, beta=beta, analytic_kl=analytic_kl,
        binarize=binarize, batch_size=batch_size, num_batches=num_batches,
    )
    history: History = {"epoch": [], "train_loss": [], "train_elbo": [], "seconds": []}
    if x_test is not None:
        history.update(test_elbo=[], test_reconstruction=[], test_kl=[])
    start = 0
    if resume and Path(checkpoint_path).exists():
        (params, opt_state, key), meta = load_checkpoint(checkpoint_path, (params, opt_state, key))
        start, history = meta["epoch"], meta["history"]
    # Work on private copies: the epoch function donates (consumes) its parameter and optimizer buffers.
    params, opt_state = jax.tree.map(jnp.copy, (params, opt_state))

    bar = tqdm(range(start, epochs), total=epochs, initial=start, desc="epochs", disable=not progress,
               mininterval=0.5, dynamic_ncols=False, ncols=100)
    for epoch in bar:
        t0 = time.perf_counter()
        ekey = jax.random.fold_in(key, epoch)
        params, opt_state, bad, losses, elbos = run_epoch(params, opt_state, ekey, x_train)
        bad = int(bad)
        if bad >= 0:
            nnx.update(model, params)
            step = epoch * num_batches + bad
            bar.close()
            raise NonFiniteLossError(
                f"the loss or its gradient became non-finite at step {step} (epoch {epoch + 1}, batch "
                f"{bad + 1} of {num_batches}); training stopped and the model holds the parameters from "
                "before that step. Try a smaller learning_rate, or check the data for extreme values.",
                step=step,
                history=history,
            )
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(float(jnp.mean(losses)))
        history["train_elbo"].append(float(jnp.mean(elbos)))
        if x_test is not None:
            nnx.update(model, params)
            terms = evaluate_elbo(jax.random.fold_in(ekey, 1), model, x_test)
            history["test_elbo"].append(float(terms.elbo))
            history["test_reconstruction"].append(float(terms.reconstruction))
            history["test_kl"].append(float(terms.kl))
        history["seconds"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", refresh=False)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, (params, opt_state, key), {"epoch": epoch + 1, "history": history})
    bar.close()
    nnx.update(model, params)
    return history

