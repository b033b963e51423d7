"""Training (layer 4): ``fit``, with whole epochs compiled by ``jax.lax.scan``, Optax, checkpoints and resume.

The code reads in the order a VAE is trained:

- ``_loss``: minus the objective of one batch: the (beta-)ELBO of ``vae_lib.objectives.elbo`` (sum over
  data and latent dimensions, mean over the batch), or the IWAE bound (Burda et al., 2016);
- ``_train_epoch``: shuffle, binarize, then ``lax.scan`` a train step (``value_and_grad`` of the loss and
  an Optax update) over the batches: one XLA call per epoch, compiled once per configuration and data
  shape and reused by every later ``fit`` call with the same ones;
- ``fit``: checks its arguments (``_check_fit_args``), then a loop over epochs that evaluates, records the
  history and writes checkpoints.

Reproducibility: epoch ``e`` uses the key ``fold_in(key, e)``, so the same key gives the same run, and a
run resumed from a checkpoint after epoch ``n`` is bitwise identical to one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from vae_lib import _checks, _inputs, sharding
from vae_lib._fast_bernoulli import bernoulli
from vae_lib._run_config import describe, differences, fingerprint, model_description, normalized
from vae_lib.checkpoint import check_storable, load_checkpoint, save_checkpoint
from vae_lib.evaluation import evaluate_elbo
from vae_lib.objectives import elbo, log_importance_weights, log_mean_exp

History = dict[str, list[float]]
Schedule = Callable[[jax.Array], jax.Array]


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or state; the model holds the state from before that epoch."""

    def __init__(self, message: str, step: int, history: History):
        super().__init__(message)
        self.step = step
        self.history = history


class TrainState(NamedTuple):
    """Everything a run needs to go on; ``fit`` checkpoints it after every epoch.

    Attributes:
      params: the model's state (``nnx.split(model)[1]``).
      opt_state: the optimizer's state.
      key: the run's key; epoch ``e`` uses ``fold_in(key, e)``.
      epoch: the number of epochs completed.
      history: per-epoch lists (see ``fit``).
    """

    params: Any
    opt_state: Any
    key: jax.Array
    epoch: int
    history: History


@dataclasses.dataclass(frozen=True)
class _Config:
    """What the compiled epoch depends on besides array shapes: its cache key (hashable, equal by value)."""

    graphdef: Any
    optimizer: optax.GradientTransformation
    likelihood: str
    objective: str  # "elbo" or "iwae"
    num_samples: int
    analytic_kl: bool
    binarize: bool
    batch_size: int
    beta_schedule: Schedule | None  # None: a constant beta, passed as a (traced) argument
    mesh: jax.sharding.Mesh | None = None  # None: one device; else each batch is split over the "data" axis


def _loss(config: _Config, params, key, xb, yb, beta, free_bits) -> tuple[jax.Array, jax.Array]:
    """``(-objective, ELBO)`` of one batch ``xb (B, D)`` (and labels ``yb (B, C)``); both batch means."""
    model = nnx.merge(config.graphdef, params)
    kw = dict(likelihood=config.likelihood, num_samples=config.num_samples, y=yb, log_prior=model.log_prior)
    if config.objective == "iwae":
        log_w = log_importance_weights(key, xb, model.encode, model.decode, **kw)  # (K, B)
        return -log_mean_exp(log_w, axis=0).mean(), log_w.mean()  # -IWAE_k; the k-sample ELBO estimate
    terms = elbo(
        key,
        xb,
        model.encode,
        model.decode,
        beta=beta,
        analytic_kl=config.analytic_kl,
        free_bits=free_bits,
        **kw,
    )
    return -terms.objective, terms.elbo


def _all_finite(tree) -> jax.Array:
    """Whether every floating entry of a pytree is finite (a scalar bool; no overflow, unlike a norm)."""
    leaves = [a for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.bool_(True)


@functools.partial(jax.jit, static_argnums=0)
def _train_epoch(config: _Config, params, opt_state, key, first_step, data, hyper):
    """One epoch: ``(params, opt_state, losses (S,), elbos (S,), finite)`` after its ``S`` steps.

    ``data`` is ``(x (N, D), y (N, C) or None)``, ``hyper`` is ``(beta or None, free_bits or None)``
    (scalars; ``beta`` is ``None`` when ``config`` has a schedule). ``finite`` says whether the final
    parameters and optimizer state are all finite. The inputs are not donated, so the caller still holds
    the epoch's input state when it fails.
    """
    (x, y), (beta, free_bits) = data, hyper
    num_batches = x.shape[0] // config.batch_size

    def train_step(carry, inputs):
        params, opt_state = carry
        step, idx, xbin, k = inputs
        xb = x[idx] if xbin is None else xbin.astype(x.dtype)  # (B, D), gathered inside XLA
        yb = None if y is None else y[idx]  # (B, C)
        if config.mesh is not None:  # data parallelism: each device takes B / n rows (vae_lib.sharding)
            xb, yb = jax.lax.with_sharding_constraint((xb, yb), sharding.rows(config.mesh, 2))
        b = beta if config.beta_schedule is None else config.beta_schedule(step)
        grad_fn = jax.value_and_grad(functools.partial(_loss, config), has_aux=True)
        (loss, elbo_value), grads = grad_fn(params, k, xb, yb, b, free_bits)
        updates, opt_state = config.optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, elbo_value)

    kperm, ksteps = jax.random.split(key)
    perm = jax.random.permutation(kperm, x.shape[0])[: num_batches * config.batch_size]
    idx = perm.reshape(num_batches, config.batch_size)  # the last partial batch is dropped
    keys = jax.random.split(ksteps, num_batches)
    xbin = None
    if config.binarize:  # all the epoch's batches at once, before the scan (benchmarks/README.md)
        keys, kbin = jax.vmap(jax.random.split, out_axes=1)(keys)  # z from keys[i], the batch from kbin[i]
        xbin = jax.vmap(bernoulli)(kbin, x[idx])  # (num_batches, B, D) bool
    steps = first_step + jnp.arange(num_batches)
    (params, opt_state), (losses, elbos) = jax.lax.scan(
        train_step, (params, opt_state), (steps, idx, xbin, keys)
    )
    return params, opt_state, losses, elbos, _all_finite((params, opt_state))


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """``optax.adam``, one object per learning rate, so that the compiled epoch is reused across calls."""
    return optax.adam(learning_rate)


def _check_fit_args(model, x_train, y_train, x_test, y_test, **kw) -> tuple[_Config, dict]:
    """Check every argument of ``fit``; return the static configuration and the checked values."""
    domain = "unit" if _checks.boolean("binarize", kw["binarize"]) else None
    x_train, y_train = _inputs.model_data(
        model,
        x_train,
        y_train,
        x_name="x_train",
        y_name="y_train",
        domain=domain,
        why="for binarize=True" if domain else None,
    )
    if x_test is not None:
        x_test, y_test = _inputs.model_data(model, x_test, y_test, x_name="x_test", y_name="y_test")
    elif y_test is not None:
        raise ValueError("y_test was given without x_test")
    batch_size = _checks.positive_int("batch_size", kw["batch_size"])
    if batch_size > x_train.shape[0]:
        raise ValueError(
            f"batch_size must be <= the number of training examples ({x_train.shape[0]}), got {batch_size}"
        )
    optimizer = kw["optimizer"]
    if optimizer is None:
        optimizer = _adam(_checks.real("learning_rate", kw["learning_rate"], minimum=0.0, strict=True))
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    _checks.choice("objective", kw["objective"], ("elbo", "iwae"))
    beta, free_bits = kw["beta"], kw["free_bits"]
    if kw["objective"] == "iwae" and (callable(beta) or beta != 1.0 or free_bits is not None):
        raise ValueError("beta and free_bits apply to objective='elbo'; the IWAE bound has neither")
    if free_bits is not None and model.prior is not None:
        raise ValueError(
            "free_bits needs the standard-normal prior: this model has a learned prior, whose KL does not "
            "split over latent dimensions"
        )
    if not callable(beta):
        beta = jnp.float32(_checks.real("beta", beta, minimum=0.0))
    if free_bits is not None:
        free_bits = jnp.float32(_checks.real("free_bits", free_bits, minimum=0.0))
    mesh = kw["mesh"]
    if mesh is not None:
        devices, here = sharding.check_mesh(mesh), len(mesh.local_devices)
        if batch_size % devices:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the mesh's data axis size ({devices})"
            )
        if x_train.shape[0] % here:
            raise ValueError(
                f"x_train's number of rows ({x_train.shape[0]}) must be a multiple of the number of this "
                f"process's devices in the mesh ({here})"
            )
    resume = _checks.boolean("resume", kw["resume"])
    if kw["checkpoint_path"] is not None:
        _check_checkpoint_path(kw["checkpoint_path"], resume=resume)
    elif resume:
        raise ValueError("resume=True needs a checkpoint_path")
    _checks.boolean("progress", kw["progress"])
    config = _Config(
        graphdef=nnx.graphdef(model),
        optimizer=optimizer,
        likelihood=model.likelihood,
        objective=kw["objective"],
        num_samples=_checks.positive_int("num_samples", kw["num_samples"]),
        analytic_kl=_checks.boolean("analytic_kl", kw["analytic_kl"]),
        binarize=domain == "unit",
        batch_size=batch_size,
        beta_schedule=beta if callable(beta) else None,
        mesh=mesh,
    )
    values = dict(
        key=_checks.key("key", kw["key"]),
        epochs=_checks.positive_int("epochs", kw["epochs"]),
        data=(x_train, y_train),
        x_test=x_test,
        y_test=y_test,
        hyper=(None if callable(beta) else beta, free_bits),
    )
    return config, values


def fit(
    model,
    x_train: jax.Array,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    beta: float | Schedule = 1.0,
    analytic_kl: bool = True,
    binarize: bool = False,
    x_test: jax.Array | None = None,
    optimizer: optax.GradientTransformation | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    objective: str = "elbo",
    num_samples: int = 1,
    free_bits: float | None = None,
    y_train: jax.Array | None = None,
    y_test: jax.Array | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> History:
    """Train ``model`` (a ``VAE``) in place by maximizing the (beta-)ELBO or the IWAE bound with Adam.

    Args:
      model: a ``vae_lib.models.VAE``; updated in place.
      x_train: training data, shape ``(N, D)``. For a Bernoulli decoder it must be binary, or grey levels
        in [0, 1] with ``binarize=True`` (a fresh binarization each time a batch is drawn).
      key: PRNG key; the same key gives the same run.
      epochs: total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step; the last partial batch of each epoch is dropped.
      learning_rate: Adam's step size (ignored when ``optimizer`` is given).
      beta: KL weight, a float >= 0 or a schedule ``step -> beta`` (e.g. an Optax schedule such as
        ``optax.linear_schedule(0.0, 1.0, 1000)``), evaluated at every step (counted from 0 over the whole
        run) inside the compiled epoch. The history's ``elbo`` entries are always the true ELBO.
      analytic_kl: closed-form KL (default) or its Monte Carlo estimate. A model with a learned prior
        (``model.prior``, trained with the rest) always uses the Monte Carlo estimate.
      binarize: dynamic binarization of training batches.
      x_test: optional held-out data, evaluated after every epoch (must be binary for Bernoulli).
      optimizer: an Optax transformation to use instead of ``optax.adam(learning_rate)``. Pass the same
        object again to reuse the compiled epoch.
      checkpoint_path: if given, the ``TrainState`` (parameters, optimizer state, key, epoch, history) and
        the run's settings are written there after every epoch (atomically), and when ``fit`` is
        interrupted (``KeyboardInterrupt``). Checked before the first epoch: it must be a file path in a
        folder that can be written, and with ``resume=False`` no file may exist there (``fit`` never
        overwrites a file it did not write in this run).
      resume: continue from ``checkpoint_path`` if it exists. The checkpoint must come from a run with the
        same settings: the model (architecture, activations, likelihood), the optimizer (``learning_rate``,
        or the ``optimizer``'s structure and the numbers in its closures, such as Adam's ``b1``, ``b2``,
        ``eps`` or a schedule's constants; not arrays or other objects it holds), ``batch_size``, ``beta``
        (value or schedule), ``analytic_kl``, ``binarize``, ``objective``, ``num_samples``, ``free_bits``,
        ``key``, and the data (a SHA-256 of ``x_train``, ``y_train``, ``x_test``, ``y_test``, including
        whether ``x_test`` is given). Any difference is a ``ValueError`` that lists each one. Only
        ``epochs`` may change, and only upwards (``epochs`` equal to the checkpoint's returns it without
        training); ``progress``, ``mesh`` (a run may go on over other devices) and the file's name may
        change too.
      progress: show a progress bar with the running loss.
      objective: ``"elbo"``, or ``"iwae"`` to maximize the bound ``IWAE_k``, ``k = num_samples``.
      num_samples: samples of ``z`` per example: for the ELBO's Monte Carlo estimate, or ``k`` of IWAE.
      free_bits: ``lam`` nats per latent dimension (Kingma et al., 2016): the objective's KL term is
        ``sum_j max(lam, batch mean of KL_j)``; the reported ELBO stays the true one.
      y_train, y_test: labels for a conditional model (``num_classes > 0``): integers ``(N,)`` or one-hot
        rows ``(N, C)``.
      mesh: train data-parallel over a ``jax.sharding.Mesh`` with a ``"data"`` axis (e.g.
        ``vae_lib.data_mesh()``): each batch is split over that axis, the parameters and optimizer state
        are replicated (``vae_lib.sharding``). ``batch_size`` and the number of examples must be
        multiples of the axis size. The result equals the one-device run up to float rounding. Under
        ``jax.distributed.initialize()``, each process passes its own rows of the data (the global data
        set is their concatenation in process order) and process 0 writes the checkpoint.

    Returns:
      The history: per-epoch lists ``epoch``, ``train_loss`` (mean ``-objective`` over the epoch's steps:
      with beta, free bits or IWAE this is not ``-ELBO``), ``train_elbo`` (mean ELBO estimate over the
      steps; for IWAE the ``k``-sample mean of the log weights) and, with ``x_test``, ``test_elbo``,
      ``test_reconstruction``, ``test_kl`` (``evaluate_elbo``, one sample); ``beta`` (its value at the
      epoch's last step) when ``beta`` is a schedule; and ``seconds`` (wall time of the epoch, evaluation
      included).

    Raises:
      NonFiniteLossError: a loss, or the parameters or optimizer state at the end of an epoch, became NaN
        or infinite. Training stops; the model (and the checkpoint) keep the state from the end of the
        last complete epoch, and the error names the first step whose loss was not finite (a non-finite
        update shows in the loss of the next step).
      ValueError: a bad argument; a ``checkpoint_path`` that cannot be written, or that exists with
        ``resume=False``; a resume with other settings, or from a file that is not such a checkpoint.
      KeyboardInterrupt: re-raised, after writing the last completed epoch's checkpoint (given a path).

    Whatever stops ``fit`` (an error, ``KeyboardInterrupt``), the model holds the parameters of the last
    completed epoch, as it does between epochs.
    """
    config, v = _check_fit_args(**locals())  # every argument of fit, by name
    params = nnx.state(model)
    state = TrainState(params, config.optimizer.init(params), v["key"], 0, _new_history(v, config))
    run = None  # the run's settings, stored with each checkpoint
    if checkpoint_path is not None:
        run = _run_settings(model, config, v, state, learning_rate if optimizer is None else None)
    if resume and Path(checkpoint_path).exists():
        state = _restore(checkpoint_path, state, run, v["epochs"])
    saved = state.epoch  # the last epoch whose state is on disk
    if config.mesh is not None:  # where each array lives; the compiled epoch is the same program
        state, v = _place_on_mesh(config.mesh, state, v)
    num_batches = v["data"][0].shape[0] // config.batch_size
    bar = _progress_bar(state.epoch, v["epochs"], progress)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            ekey = jax.random.fold_in(state.key, epoch)
            first_step = jnp.int32(epoch * num_batches)
            if config.mesh is not None:
                ekey, first_step = sharding.replicate(config.mesh, (ekey, first_step))
            params, opt_state, losses, elbos, finite = _train_epoch(
                config, state.params, state.opt_state, ekey, first_step, v["data"], v["hyper"]
            )
            if not (bool(finite) and bool(jnp.all(jnp.isfinite(losses)))):
                raise _non_finite(losses, epoch, num_batches, state.history)
            history = {name: list(values) for name, values in state.history.items()}  # a copy: an
            # epoch that does not complete leaves no trace
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(float(jnp.mean(losses)))
            history["train_elbo"].append(float(jnp.mean(elbos)))
            if config.beta_schedule is not None:
                history["beta"].append(float(config.beta_schedule(first_step + num_batches - 1)))
            if v["x_test"] is not None:
                nnx.update(model, params)
                terms = evaluate_elbo(
                    jax.random.fold_in(ekey, 1),
                    model,
                    v["x_test"],
                    y=v["y_test"],
                    **_eval_chunks(config.mesh, v),
                )
                history["test_elbo"].append(float(terms.elbo))
                history["test_reconstruction"].append(float(terms.reconstruction))
                history["test_kl"].append(float(terms.kl))
            history["seconds"].append(time.perf_counter() - t0)
            state = TrainState(params, opt_state, state.key, epoch + 1, history)
            nnx.update(model, state.params)  # the model holds the last completed epoch at every point
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", refresh=False)
            if checkpoint_path is not None:
                _save(checkpoint_path, state, run)
                saved = state.epoch
    except BaseException as e:  # an error, or KeyboardInterrupt: keep the last completed epoch
        bar.close()
        nnx.update(model, state.params)
        if isinstance(e, KeyboardInterrupt) and checkpoint_path is not None and state.epoch > saved:
            _save(checkpoint_path, state, run)
        raise
    bar.close()
    nnx.update(model, state.params)
    return state.history


def _place_on_mesh(mesh, state: TrainState, v: dict) -> tuple[TrainState, dict]:
    """The state and hyperparameters replicated over ``mesh``, the data's rows split over its data axis."""
    arrays = sharding.replicate(mesh, (state.params, state.opt_state, state.key))
    state = TrainState(*arrays, state.epoch, state.history)
    x, y = (None if a is None else sharding.shard_rows(mesh, a) for a in v["data"])
    hyper = tuple(None if h is None else sharding.replicate(mesh, h) for h in v["hyper"])
    return state, {**v, "data": (x, y), "hyper": hyper}


def _eval_chunks(mesh, v: dict) -> dict:
    """``evaluate_elbo``'s chunking: its default, or with a mesh, rounded up to a multiple of its data axis.

    A rounded chunk draws other samples than the one-device run, so the test history is then another
    Monte Carlo estimate of the same ELBO (the parameters are unaffected).
    """
    if mesh is None:
        return {}
    devices = sharding.check_mesh(mesh)
    return {"mesh": mesh, "batch_size": -(-500 // devices) * devices}


def _progress_bar(start: int, epochs: int, progress: bool) -> tqdm:
    return tqdm(
        range(start, epochs),
        total=epochs,
        initial=start,
        desc="epochs",
        disable=not progress,
        mininterval=0.5,
        dynamic_ncols=False,
        ncols=100,
    )


def _new_history(v: dict, config: _Config) -> History:
    names = ["epoch", "train_loss", "train_elbo", "seconds"]
    names += ["beta"] if config.beta_schedule is not None else []
    names += ["test_elbo", "test_reconstruction", "test_kl"] if v["x_test"] is not None else []
    return {name: [] for name in names}


def _check_checkpoint_path(path, *, resume: bool) -> None:
    """Refuse, before any training, a ``checkpoint_path`` that ``fit`` could not write or must not replace."""
    p = Path(_checks.path("checkpoint_path", path))
    if p.is_dir():
        raise ValueError(f"checkpoint_path {p} is a folder; give a file in it, e.g. {p / 'run.ckpt.npz'}")
    if p.exists() and not p.is_file():
        raise ValueError(f"checkpoint_path {p} exists and is not a regular file")
    if p.exists() and not resume:
        raise ValueError(
            f"checkpoint_path {p} already exists and resume=False: fit does not overwrite a file it did not "
            "write in this run. To continue the run saved there, pass resume=True; to start a new run, give "
            "another checkpoint_path (or delete that file first)"
        )
    folder = p.parent
    while not folder.exists() and folder != folder.parent:  # the folders fit would create
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"checkpoint_path {p} cannot be created: {folder} is a file, not a folder")
    try:  # the only reliable test of permissions, quotas and read-only file systems is to write
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(
            f"checkpoint_path {p} cannot be written: creating a file in {folder} fails ({e.strerror or e})"
        ) from None


def _run_settings(model, config: _Config, v: dict, state: TrainState, learning_rate) -> dict:
    """What a run's result depends on besides ``epochs``, as JSON: stored with each checkpoint, compared
    on resume (see ``fit``'s ``resume``). Also checks, before any training, that the state can be saved."""
    check_storable((state.params, state.opt_state, state.key))
    (x, y), hyper = v["data"], v["hyper"]
    settings = {
        "model": model_description(model),
        "likelihood": model.likelihood,
        "optimizer": describe(config.optimizer),
        "learning_rate": learning_rate,  # None when an optimizer is given (it holds its own)
        "batch_size": config.batch_size,
        "beta": describe(config.beta_schedule) if config.beta_schedule is not None else float(hyper[0]),
        "free_bits": None if hyper[1] is None else float(hyper[1]),
        "analytic_kl": config.analytic_kl,
        "binarize": config.binarize,
        "objective": config.objective,
        "num_samples": config.num_samples,
        "key": describe(v["key"]),
        "x_train": _fingerprint(x),
        "y_train": _fingerprint(y),
        "x_test": _fingerprint(v["x_test"]),
        "y_test": _fingerprint(v["y_test"]),
    }
    return normalized(settings)


def _fingerprint(a) -> str | None:
    """The data's fingerprint; with several processes, those of every process's rows, in process order."""
    f = fingerprint(a)
    if jax.process_count() == 1 or f is None:
        return f
    from jax.experimental import multihost_utils

    codes = multihost_utils.process_allgather(np.frombuffer(f.encode(), np.uint8))  # (processes, 16)
    return "+".join(bytes(np.asarray(c)).decode() for c in codes)


def _save(path, state: TrainState, run: dict | None = None) -> None:
    """The arrays of ``state`` as a tree ``(params, opt_state, key)``; epoch, history and the run's
    settings as metadata. With several processes (``jax.distributed``), process 0 writes: the state is
    replicated, so every process holds the same values."""
    if jax.process_index() != 0:
        return
    save_checkpoint(
        path,
        (state.params, state.opt_state, state.key),
        {"epoch": state.epoch, "history": state.history, "config": run},
    )


def _restore(path, like: TrainState, run: dict, epochs: int) -> TrainState:
    """The state saved at ``path``, after checking that it continues the run described by ``run``."""
    (params, opt_state, key), meta = load_checkpoint(path, (like.params, like.opt_state, like.key))
    epoch, history, stored = meta.get("epoch"), meta.get("history"), meta.get("config")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not isinstance(history, dict):
        raise ValueError(f"{path} was not written by fit (its metadata lacks epoch, history)")
    if not isinstance(stored, dict):
        raise ValueError(
            f"{path} holds no run settings (it was written by fit before vae_lib stored them, or not by "
            "fit), so a resume cannot check that it continues the same run; start a new run with another "
            "checkpoint_path"
        )
    diffs = differences(stored, run)
    if diffs:
        raise ValueError(
            f"checkpoint {path} was written by a run with other settings, so resuming would not continue "
            "that run:\n  " + "\n  ".join(diffs) + "\nResume with the stored settings (only epochs may "
            "grow), or start a new run with another checkpoint_path"
        )
    if not 0 <= epoch <= epochs:
        raise ValueError(
            f"checkpoint {path} holds {epoch} completed epochs, more than epochs={epochs}: pass "
            f"epochs >= {epoch} to continue it (epochs={epoch} returns it unchanged)"
            if epoch > epochs
            else f"checkpoint {path} is not what fit writes: epoch = {epoch}"
        )
    _check_history(path, history, epoch, like.history)
    return TrainState(params, opt_state, key, epoch, {name: list(history[name]) for name in like.history})


def _check_history(path, history: dict, epoch: int, like: History) -> None:
    """A stored history must have ``like``'s lists, each of ``epoch`` numbers, ``epoch`` counting 1, 2, ..."""
    bad = None
    if set(history) != set(like):
        bad = f"its history has the lists {sorted(history)}, expected {sorted(like)}"
    else:
        for name, values in history.items():
            if not isinstance(values, list) or len(values) != epoch:
                bad = f"its history's {name!r} is not a list of {epoch} numbers"
            elif not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in values):
                bad = f"its history's {name!r} holds values that are not numbers"
            if bad:
                break
        if bad is None and history["epoch"] != list(range(1, epoch + 1)):
            bad = f"its history's 'epoch' is not 1, ..., {epoch}"
    if bad:
        raise ValueError(f"checkpoint {path} is not what fit writes: {bad}")


def _non_finite(losses: jax.Array, epoch: int, num_batches: int, history: History) -> NonFiniteLossError:
    bad = jnp.flatnonzero(~jnp.isfinite(losses))
    batch = int(bad[0]) if bad.size else num_batches - 1
    what = "the loss" if bad.size else "the parameters or optimizer state (after the epoch's last step)"
    step = epoch * num_batches + batch
    return NonFiniteLossError(
        f"{what} became non-finite at step {step} (epoch {epoch + 1}, batch {batch + 1} of {num_batches}); "
        f"training stopped and the model holds the state from the end of epoch {epoch} (the last complete "
        "one). Try a smaller learning_rate, or check the data for extreme values.",
        step=step,
        history=history,
    )
