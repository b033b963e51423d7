"""Nothing lost, nothing silently wrong (issue 12).

1. Nothing lost: ``fit`` checks ``checkpoint_path`` before the first epoch, never overwrites a file that
   it did not write in this run, and whatever stops it (an error, ``KeyboardInterrupt``) leaves the model
   with the parameters of the last completed epoch; a ``KeyboardInterrupt`` also leaves that epoch's
   checkpoint on disk. A process killed (``SIGKILL``) at random points resumes to the bitwise result of an
   uninterrupted run.
2. A resume with other settings (every ``fit`` argument that changes the result, the model, the optimizer,
   the key, the data) is refused with a ``ValueError`` that lists each difference; so is a resume with
   fewer epochs than the checkpoint's.
3. Hostile checkpoint files: sizes and dtypes are checked before any array is read (a small file that
   inflates to 200 MB is refused with a few MB of memory), crafted metadata gives a ``ValueError``, and
   leaves that cannot be stored are refused when saving. A hypothesis fuzz test of mutated checkpoints.
4. Numbers at the extremes, against SciPy or closed forms; data that cannot be computed in float32, and
   grey levels for a Bernoulli decoder, are refused where they enter.
5. Quadrature on a grid too coarse for the posterior: detected, and exact against the closed form of a
   linear-Gaussian model once the grid is fine enough.

Every refusal asserts that nothing was lost: the file's bytes are unchanged, the model's parameters are
those of the last completed epoch (or untouched, when nothing trained).
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import special, stats

import vae_lib
from vae_lib import checkpoint, evaluation, training

D, Z, HIDDEN = 8, 2, (8,)
N, BATCH = 48, 16  # 3 steps per epoch


def _model(seed: int = 0, **kw):
    return vae_lib.mlp_vae(D, Z, hidden=kw.pop("hidden", HIDDEN), rngs=nnx.Rngs(seed), **kw)


def _binary(seed: int = 0, n: int = N) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, D)) < 0.4).astype(np.float32)


def _leaves(tree) -> list[np.ndarray]:
    return [np.array(a) for a in jax.tree.leaves(tree)]


def _same(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(la, lb, strict=True)
    )


KW = dict(key=jax.random.key(3), batch_size=BATCH, progress=False)


# --- 1. nothing lost ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, message",
    [
        pytest.param(lambda d: d, r"checkpoint_path .* is a folder", id="a-folder"),
        pytest.param(
            lambda d: d / "file.txt" / "c.npz", r"cannot be created: .*file.txt is a file", id="under-a-file"
        ),
        pytest.param(
            lambda d: Path("/proc/vae_lib_test/c.npz"),
            r"checkpoint_path .* cannot be written",
            id="unwritable",
        ),
    ],
)
def test_a_bad_checkpoint_path_is_refused_before_the_first_epoch(tmp_path, where, message):
    (tmp_path / "file.txt").write_text("the user's notes")
    model = _model(0)
    init = _leaves(nnx.state(model))
    t0 = time.process_time()
    with pytest.raises(ValueError, match=message):
        vae_lib.fit(model, _binary(), epochs=2, checkpoint_path=where(tmp_path), **KW)
    assert _same(nnx.state(model), init)  # nothing trained
    assert (tmp_path / "file.txt").read_text() == "the user's notes"
    assert time.process_time() - t0 < 5.0  # refused at once, not after compiling and training an epoch


@pytest.mark.parametrize("kind", ["users-data-npz", "earlier-checkpoint"])
def test_an_existing_file_is_never_overwritten_without_resume(tmp_path, kind):
    path = tmp_path / "data.npz"
    if kind == "users-data-npz":
        np.savez(path, images=np.arange(10.0))
    else:
        vae_lib.fit(_model(0), _binary(), epochs=1, checkpoint_path=path, **KW)
    before = path.read_bytes()
    model = _model(1)
    init = _leaves(nnx.state(model))
    with pytest.raises(
        ValueError, match=r"already exists and resume=False.*resume=True.*another checkpoint_path"
    ):
        vae_lib.fit(model, _binary(), epochs=2, checkpoint_path=path, **KW)
    assert path.read_bytes() == before
    assert _same(nnx.state(model), init)
    if kind == "users-data-npz":  # and resume=True does not take it for a checkpoint either
        with pytest.raises(ValueError, match="not a vae_lib checkpoint"):
            vae_lib.fit(model, _binary(), epochs=2, checkpoint_path=path, resume=True, **KW)
        assert path.read_bytes() == before


def _interrupt_on_call(monkeypatch, module, name: str, call: int, exc=KeyboardInterrupt):
    """Make ``module.name`` raise ``exc`` on its ``call``-th call (1-based); the other calls go through."""
    real, count = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise exc()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def _reference(epochs: int, **kw):
    model = _model(0)
    history = vae_lib.fit(model, _binary(), epochs=epochs, **KW, **kw)
    return model, history


@pytest.mark.parametrize("with_path", [False, True])
@pytest.mark.parametrize("with_test", [False, True])
def test_keyboard_interrupt_keeps_the_last_completed_epoch(tmp_path, monkeypatch, with_path, with_test):
    """Ctrl-C in epoch 3: the model holds epoch 2's parameters, and with a path, so does the checkpoint."""
    extra = dict(x_test=_binary(9, 16)) if with_test else {}
    reference, ref_history = _reference(2, **extra)
    path = tmp_path / "c.npz" if with_path else None
    _interrupt_on_call(monkeypatch, training, "_train_epoch", 3)
    model = _model(0)
    with pytest.raises(KeyboardInterrupt):
        vae_lib.fit(model, _binary(), epochs=5, checkpoint_path=path, **KW, **extra)
    monkeypatch.undo()
    assert _same(nnx.state(model), nnx.state(reference))
    if with_path:  # ... and the run goes on from there, to the uninterrupted result
        resumed = _model(7)
        history = vae_lib.fit(resumed, _binary(), epochs=2, checkpoint_path=path, resume=True, **KW, **extra)
        assert _same(nnx.state(resumed), nnx.state(reference))
        assert {k: v for k, v in history.items() if k != "seconds"} == {
            k: v for k, v in ref_history.items() if k != "seconds"
        }


def test_keyboard_interrupt_while_saving_writes_the_epoch_on_the_way_out(tmp_path, monkeypatch):
    reference, _ = _reference(2)
    path = tmp_path / "c.npz"
    _interrupt_on_call(monkeypatch, training, "save_checkpoint", 2)  # the save of epoch 2
    model = _model(0)
    with pytest.raises(KeyboardInterrupt):
        vae_lib.fit(model, _binary(), epochs=5, checkpoint_path=path, **KW)
    monkeypatch.undo()
    assert _same(nnx.state(model), nnx.state(reference))
    like = (nnx.state(model), optax.adam(1e-3).init(nnx.state(model)), jax.random.key(0))
    (params, _, _), meta = checkpoint.load_checkpoint(path, like)
    assert meta["epoch"] == 2 and meta["history"]["epoch"] == [1, 2]
    assert _same(params, nnx.state(reference))


def test_an_error_while_evaluating_keeps_the_last_completed_epoch(tmp_path, monkeypatch):
    reference, _ = _reference(1, x_test=_binary(9, 16))
    _interrupt_on_call(monkeypatch, training, "evaluate_elbo", 2, exc=MemoryError)  # epoch 2's evaluation
    model = _model(0)
    with pytest.raises(MemoryError):
        vae_lib.fit(
            model, _binary(), epochs=3, x_test=_binary(9, 16), checkpoint_path=tmp_path / "c.npz", **KW
        )
    monkeypatch.undo()
    assert _same(nnx.state(model), nnx.state(reference))  # not epoch 2's parameters, half recorded


# --- 2. a resume with other settings is refused --------------------------------------------------------

_CHANGES = {  # name -> (fit keyword arguments, the setting the message must name)
    "learning_rate": (dict(learning_rate=3e-3), "learning_rate: stored 0.001, given 0.003"),
    "beta": (dict(beta=0.5), "beta: stored 1.0, given 0.5"),
    "beta-schedule": (dict(beta=optax.linear_schedule(0.0, 1.0, 10)), "beta: stored 1.0, given 'optax"),
    "batch_size": (dict(batch_size=8), "batch_size: stored 16, given 8"),
    "binarize": (dict(binarize=True), "binarize: stored false, given true"),
    "analytic_kl": (dict(analytic_kl=False), "analytic_kl: stored true, given false"),
    "key": (dict(key=jax.random.key(4)), "key: stored"),
    "data": (dict(x_train=_binary(5)), "x_train: stored"),
    "x_test-added": (dict(x_test=_binary(9, 16)), "x_test: stored null, given"),
    "objective": (dict(objective="iwae", num_samples=2), "objective: stored 'elbo', given 'iwae'"),
    "num_samples": (dict(num_samples=2), "num_samples: stored 1, given 2"),
    "free_bits": (dict(free_bits=0.1), "free_bits: stored null, given 0.1"),
    "optimizer-adamw": (dict(optimizer=optax.adamw(1e-3)), "optimizer: stored"),
    "activation": (dict(model=_model(0, activation=jax.nn.tanh)), "model: stored .*relu.*given .*tanh"),
    "likelihood": (
        dict(
            model=vae_lib.mlp_vae(
                D, Z, hidden=HIDDEN, likelihood="gaussian", obs_logvar=0.0, rngs=nnx.Rngs(0)
            )
        ),
        "likelihood: stored 'bernoulli', given 'gaussian'",
    ),
}


@pytest.mark.parametrize("change", list(_CHANGES))
def test_a_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, change):
    path = tmp_path / "c.npz"
    vae_lib.fit(_model(0), _binary(), epochs=1, checkpoint_path=path, **KW)
    before = path.read_bytes()
    given, message = _CHANGES[change]
    args = {**KW, **given}
    model, x = args.pop("model", _model(1)), args.pop("x_train", _binary())
    init = _leaves(nnx.state(model))
    with pytest.raises(ValueError, match=r"(?s)written by a run with other settings.*" + message):
        vae_lib.fit(model, x, epochs=3, checkpoint_path=path, resume=True, **args)
    assert path.read_bytes() == before
    assert _same(nnx.state(model), init)


def test_x_test_dropped_and_fewer_epochs_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    vae_lib.fit(_model(0), _binary(), epochs=2, x_test=_binary(9, 16), checkpoint_path=path, **KW)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"x_test: stored '[0-9a-f]{16}', given null"):
        vae_lib.fit(_model(1), _binary(), epochs=3, checkpoint_path=path, resume=True, **KW)
    with pytest.raises(ValueError, match=r"holds 2 completed epochs, more than epochs=1: pass epochs >= 2"):
        vae_lib.fit(
            _model(1), _binary(), epochs=1, x_test=_binary(9, 16), checkpoint_path=path, resume=True, **KW
        )
    assert path.read_bytes() == before


def test_every_difference_is_listed(tmp_path):
    path = tmp_path / "c.npz"
    vae_lib.fit(_model(0), _binary(), epochs=1, checkpoint_path=path, **KW)
    with pytest.raises(ValueError) as info:
        vae_lib.fit(
            _model(0),
            _binary(),
            epochs=2,
            checkpoint_path=path,
            resume=True,
            **{**KW, "batch_size": 8},
            beta=0.5,
        )
    lines = [line.strip().split(":")[0] for line in str(info.value).splitlines()[1:-1]]
    assert lines == ["batch_size", "beta"]


def test_the_same_settings_resume_and_the_optimizer_can_be_a_new_equal_object(tmp_path):
    """A new ``optax.adam(2e-3)`` object per call (as a script run twice makes) is the same setting."""
    path = tmp_path / "c.npz"
    full = _model(0)
    vae_lib.fit(full, _binary(), epochs=2, optimizer=optax.adam(2e-3), **KW)
    vae_lib.fit(_model(0), _binary(), epochs=1, optimizer=optax.adam(2e-3), checkpoint_path=path, **KW)
    resumed = _model(1)
    vae_lib.fit(
        resumed, _binary(), epochs=2, optimizer=optax.adam(2e-3), checkpoint_path=path, resume=True, **KW
    )
    assert _same(nnx.state(resumed), nnx.state(full))


# --- 3. hostile checkpoint files -----------------------------------------------------------------------


def _fit_checkpoint(path: Path, epochs: int = 1) -> tuple:
    """A real checkpoint of ``fit``, and what ``_restore`` needs to read it: (like, run, epochs)."""
    model = _model(0)
    vae_lib.fit(model, _binary(), epochs=epochs, checkpoint_path=path, **KW)
    fresh = _model(0)
    config, v = training._check_fit_args(
        model=fresh, x_train=_binary(), y_train=None, x_test=None, y_test=None, epochs=5, learning_rate=1e-3,
        beta=1.0, analytic_kl=True, binarize=False, optimizer=None, checkpoint_path=None, resume=False,
        progress=False, objective="elbo", num_samples=1, free_bits=None, mesh=None, key=KW["key"],
        batch_size=BATCH,
    )  # fmt: skip
    params = nnx.state(fresh)
    like = training.TrainState(
        params, config.optimizer.init(params), v["key"], 0, training._new_history(v, config)
    )
    return like, training._run_settings(fresh, config, v, like, 1e-3)


def _rewrite(path: Path, *, metadata=None, extra: dict | None = None) -> None:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if metadata is not None:
        arrays["__metadata__"] = np.array(metadata if isinstance(metadata, str) else json.dumps(metadata))
    arrays.update(extra or {})
    os.remove(path)
    np.savez(path, **arrays)


def _metadata(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["__metadata__"]))


@pytest.mark.parametrize(
    "mutate, message",
    [
        pytest.param(lambda m: "[" * 100_000 + "]" * 100_000, "metadata is not valid JSON", id="deep-json"),
        pytest.param(lambda m: {**m, "epoch": -3}, r"epoch = -3", id="negative-epoch"),
        pytest.param(
            lambda m: {**m, "epoch": 2**40}, r"holds 1099511627776 completed epochs", id="huge-epoch"
        ),
        pytest.param(lambda m: {**m, "epoch": True}, "not written by fit", id="bool-epoch"),
        pytest.param(lambda m: {**m, "epoch": "1"}, "not written by fit", id="string-epoch"),
        pytest.param(lambda m: {**m, "history": {}}, r"history has the lists \[\]", id="empty-history"),
        pytest.param(lambda m: {**m, "history": []}, "not written by fit", id="history-a-list"),
        pytest.param(
            lambda m: {**m, "history": {**m["history"], "train_loss": [1.0, 2.0]}},
            r"'train_loss' is not a list of 1 numbers",
            id="history-length",
        ),
        pytest.param(
            lambda m: {**m, "history": {**m["history"], "train_elbo": ["x"]}},
            r"'train_elbo' holds values that are not numbers",
            id="history-strings",
        ),
        pytest.param(
            lambda m: {**m, "history": {**m["history"], "epoch": [7]}},
            r"'epoch' is not 1, ..., 1",
            id="history-epochs",
        ),
        pytest.param(lambda m: {**m, "config": None}, "holds no run settings", id="no-config"),
        pytest.param(
            lambda m: {**m, "config": {**m["config"], "batch_size": "16"}},
            "batch_size: stored",
            id="config-type",
        ),
        pytest.param(lambda m: [m], "not a JSON object", id="metadata-a-list"),
    ],
)
def test_crafted_metadata_is_a_value_error(tmp_path, mutate, message):
    path = tmp_path / "c.npz"
    like, run = _fit_checkpoint(path)
    meta = mutate(_metadata(path))
    _rewrite(path, metadata=meta if isinstance(meta, str) else json.dumps(meta))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message):
        training._restore(path, like, run, 5)
    model = _model(1)
    init = _leaves(nnx.state(model))
    with pytest.raises(ValueError, match=message):  # and fit refuses it the same way, before training
        vae_lib.fit(model, _binary(), epochs=5, checkpoint_path=path, resume=True, **KW)
    assert path.read_bytes() == before and _same(nnx.state(model), init)


def _deflated_zeros_entry(path: Path, name: str, size: int) -> None:
    """Add an entry of ``size`` zero bytes, deflated (about size / 1000 bytes on disk): a zip bomb."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8))
    header["shape"] = (size,)
    with (
        zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf,
        zf.open(name, "w", force_zip64=True) as f,
    ):
        np.lib.format.write_array_header_1_0(f, header)
        block = bytes(2**20)
        for _ in range(size // len(block)):
            f.write(block)


@pytest.mark.parametrize("entry", ["extra", "a-real-leaf"])
def test_an_entry_that_inflates_to_200_mb_is_refused_before_it_is_read(tmp_path, entry):
    path = tmp_path / "c.npz"
    like, run = _fit_checkpoint(path)
    names = zipfile.ZipFile(path).namelist()
    if entry == "a-real-leaf":  # replace a leaf by the bomb, under its own name
        name = next(n for n in names if n.startswith("leaf[0]"))
        with np.load(path) as f:
            arrays = {k[:-4] if k.endswith(".npy") else k: f[k] for k in f.files if k + ".npy" != name}
        os.remove(path)
        np.savez(path, **arrays)
    else:
        name = "leaf[9].npy"
    _deflated_zeros_entry(path, name, 200 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares 2097\d+ bytes|unexpected \['leaf\[9\]'\]"):
            training._restore(path, like, run, 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak  # MB: the archive's directory and headers, never the 200 MB


def test_a_header_that_declares_a_huge_array_is_refused_before_its_data(tmp_path):
    """An entry whose .npy header declares 10^12 floats (4 TB) next to 16 bytes of data."""
    path = tmp_path / "c.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, np.float32))
    header["shape"] = (10**12,)
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("leaf['w'].npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(bytes(16))
        with zf.open("__metadata__.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps({"epoch": 1})))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"entry \"leaf\['w'\]\" has shape \(1000000000000,\)"):
            checkpoint.load_checkpoint(path, {"w": jnp.zeros(4)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize(
    "leaf, dtype",
    [
        pytest.param(jnp.zeros(3, jnp.bfloat16), "bfloat16", id="bfloat16"),
        pytest.param(np.array(["a", "bc"]), "<U2", id="strings"),
        pytest.param(np.zeros(2, "datetime64[s]"), "datetime64", id="datetime"),
    ],
)
def test_leaves_that_cannot_be_stored_are_refused_when_saving(tmp_path, leaf, dtype):
    with pytest.raises(TypeError, match=rf"tree leaf leaf\['b'\] has dtype {re.escape(dtype)}.*cannot store"):
        checkpoint.save_checkpoint(tmp_path / "c.npz", {"a": jnp.zeros(2), "b": leaf})
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_a_bfloat16_leaf_is_refused_before_training(tmp_path):
    model = _model(0)
    model.decoder.out.bias.set_value(jnp.zeros(D, jnp.bfloat16))
    init = _leaves(nnx.state(model))
    with pytest.raises(TypeError, match=r"bfloat16, which a checkpoint cannot store"):
        vae_lib.fit(model, _binary(), epochs=2, checkpoint_path=tmp_path / "c.npz", **KW)
    assert _same(nnx.state(model), init) and list(tmp_path.iterdir()) == []


# --- the fuzz test: mutated valid checkpoints give a checkpoint or a ValueError, in bounded memory --------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_MEMORY = 16 * 2**20  # bytes traced by tracemalloc (Python and NumPy allocations) per load
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_byte_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("zero-run"), st.integers(0, 10**6), st.integers(1, 64)),
)


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "valid.npz"
    like, run = _fit_checkpoint(path)
    return path.read_bytes(), like, run, _metadata(path)


def _load_or_value_error(path: Path, like, run) -> None:
    tracemalloc.start()
    try:
        try:
            training._restore(path, like, run, 5)
        except ValueError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < _FUZZ_MEMORY, peak


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations=st.lists(_byte_mutation, min_size=1, max_size=4))
def test_fuzz_mutated_bytes_give_only_value_errors(valid_checkpoint, tmp_path_factory, mutations):
    raw, like, run, _ = valid_checkpoint
    data = bytearray(raw)
    for op, where, arg in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= arg
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([arg])
        elif op == "zero-run":
            data[i : i + arg] = bytes(len(data[i : i + arg]))
    path = tmp_path_factory.mktemp("m") / "c.npz"
    path.write_bytes(bytes(data))
    _load_or_value_error(path, like, run)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["epoch", "history", "config", "extra"]), value=_json, nested=st.booleans())
def test_fuzz_crafted_metadata_gives_only_value_errors(
    valid_checkpoint, tmp_path_factory, field, value, nested
):
    raw, like, run, meta = valid_checkpoint
    meta = json.loads(json.dumps(meta))
    if nested and isinstance(meta.get(field), dict) and meta[field]:
        meta[field][sorted(meta[field])[0]] = value  # one entry of the history or the settings
    else:
        meta[field] = value
    path = tmp_path_factory.mktemp("m") / "c.npz"
    path.write_bytes(raw)
    _rewrite(path, metadata=json.dumps(meta, allow_nan=True))
    _load_or_value_error(path, like, run)


# --- the crash test: SIGKILL at random points, then resume ------------------------------------------------

_CHILD = """
import sys, jax, numpy as np
from flax import nnx
import vae_lib
path, epochs = sys.argv[1], int(sys.argv[2])
x = (np.random.default_rng(0).random((48, 8)) < 0.4).astype(np.float32)
model = vae_lib.mlp_vae(8, 2, hidden=(8,), rngs=nnx.Rngs(0))
kw = dict(key=jax.random.key(3), batch_size=16, progress=False, x_test=x[:16])
vae_lib.fit(vae_lib.mlp_vae(8, 2, hidden=(8,), rngs=nnx.Rngs(0)), x, epochs=1, **kw)  # compile first
print("training", flush=True)
vae_lib.fit(model, x, epochs=epochs, checkpoint_path=path, resume=True, **kw)
print("done", flush=True)
"""
CRASH_EPOCHS, CRASH_RUNS = 60, 20


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def test_sigkill_at_random_points_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    """20 training processes killed at random times; each resume ends bitwise where an uninterrupted run
    ends (parameters and history), or is refused with a clear error (none was)."""
    x = _binary()
    kw = dict(KW, x_test=x[:16])
    reference = _model(0)
    ref_history = vae_lib.fit(reference, x, epochs=CRASH_EPOCHS, **kw)
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    rng = np.random.default_rng(0)
    outcomes, t0, c0 = [], time.perf_counter(), _cpu_seconds()
    for first in range(0, CRASH_RUNS, 2):  # two processes at a time (two cores)
        paths = [tmp_path / f"run{run}.npz" for run in (first, first + 1)]
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(p), str(CRASH_EPOCHS)], stdout=subprocess.PIPE, env=env
            )
            for p in paths
        ]
        kill_at = []
        for child in children:
            assert child.stdout.readline().strip() == b"training"
            kill_at.append(time.perf_counter() + rng.uniform(0.0, 0.6))  # a random point of the training
        for child, when in sorted(zip(children, kill_at, strict=True), key=lambda c: c[1]):
            time.sleep(max(0.0, when - time.perf_counter()))
            child.send_signal(signal.SIGKILL)
            child.wait()
        for path in paths:
            epoch = _metadata(path)["epoch"] if path.exists() else 0
            resumed = _model(5 if path.exists() else 0)  # no checkpoint yet: a fresh start, as a user would
            try:
                history = vae_lib.fit(
                    resumed, x, epochs=CRASH_EPOCHS, checkpoint_path=path, resume=True, **kw
                )
            except ValueError as e:  # a refusal must say what is wrong
                outcomes.append(("refused", epoch, str(e)[:80]))
                continue
            assert _same(nnx.state(resumed), nnx.state(reference)), (path, epoch)
            assert {k: v for k, v in history.items() if k != "seconds"} == {
                k: v for k, v in ref_history.items() if k != "seconds"
            }
            outcomes.append(("bitwise", epoch))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    epochs_on_disk = sorted(o[1] for o in outcomes)
    print(
        f"\ncrash test: {CRASH_RUNS} kills in {wall:.1f} s wall, {cpu:.1f} s CPU (this process and the killed"
    )
    print(f"ones), load {os.getloadavg()[0]:.1f}; epochs on disk")
    print(f"when killed: {epochs_on_disk}; outcomes: {sorted({o[0] for o in outcomes})}")
    assert all(o[0] == "bitwise" for o in outcomes), outcomes
    assert len({o[1] for o in outcomes}) >= 3  # the kills did land at different points of the run


# --- 4. numbers at the extremes ----------------------------------------------------------------------


def test_gaussian_log_prob_of_a_very_narrow_gaussian_is_finite_and_exact():
    for x, logvar in [(0.0, -200.0), (1e-30, -200.0), (3e-20, -100.0), (0.5, -50.0), (2.0, 80.0)]:
        want = stats.norm.logpdf(x, loc=0.0, scale=math.exp(0.5 * logvar))  # float64, SciPy
        got = vae_lib.gaussian_log_prob(jnp.full((1,), x, jnp.float32), 0.0, jnp.float32(logvar))
        got_jit = jax.jit(vae_lib.gaussian_log_prob)(jnp.full((1,), x, jnp.float32), 0.0, jnp.float32(logvar))
        assert np.isfinite(want) and float(got) == float(got_jit)
        np.testing.assert_allclose(float(got), want, rtol=2e-5)  # float32 rounding of exp's argument
    # the gradient is finite there too
    g = jax.grad(lambda lv: vae_lib.gaussian_log_prob(jnp.zeros(1), 0.0, lv))(jnp.float32(-200.0))
    assert float(g) == -0.5


def test_kl_gaussians_of_very_narrow_gaussians_is_finite_and_exact():
    zero = jnp.zeros(1)
    for lq, lp, dm in [
        (-1e4, -1e4, 0.0),
        (-1e4 + 1.0, -1e4, 0.0),
        (-100.0, -100.0, 1e-20),
        (-150.0, -200.0, 0.0),
    ]:
        # KL(N(m + dm, e^lq) || N(m, e^lp)) = 1/2 [lp - lq + (e^lq + dm^2) / e^lp - 1], in float64
        r = lq - lp
        want = 0.5 * (math.expm1(r) - r + (math.exp(2 * math.log(dm) - lp) if dm else 0.0))
        got = float(vae_lib.kl_gaussians(zero + dm, jnp.full(1, lq), zero, jnp.full(1, lp)))
        assert math.isfinite(got)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_bernoulli_log_prob_with_infinite_logits():
    for x, logit, want in [
        (1.0, np.inf, 0.0),
        (0.0, -np.inf, 0.0),
        (1.0, -np.inf, -np.inf),
        (0.0, np.inf, -np.inf),
    ]:
        got = float(vae_lib.bernoulli_log_prob(jnp.full((1,), x), jnp.float32(logit)))
        assert got == want == stats.bernoulli.logpmf(int(x), special.expit(logit)), (x, logit)
    for logit in (-1e4, -30.0, 30.0, 1e4):  # finite logits: finite, and equal to SciPy in float64
        for x in (0.0, 1.0):
            want = x * -np.logaddexp(0, -logit) + (1 - x) * -np.logaddexp(0, logit)
            np.testing.assert_allclose(
                float(vae_lib.bernoulli_log_prob(jnp.full((1,), x), jnp.float32(logit))), want, rtol=1e-6
            )


def _narrow_encoder(mean_value: float, logvar_value: float):
    def encode(x):
        return jnp.full((x.shape[0], Z), mean_value), jnp.full((x.shape[0], Z), logvar_value)

    a = jnp.asarray(np.random.default_rng(0).normal(size=(Z, D)), jnp.float32)

    def decode(z):
        return z @ a  # logits (N, D)

    return encode, decode, np.asarray(a, np.float64)


def test_iwae_and_monte_carlo_kl_elbo_with_an_encoder_logvar_of_minus_200():
    """q(z|x) = N(0.5, e^-200): every sample is z = 0.5 in float32 (the standard deviation, e^-100, is
    below float32's resolution at 0.5). The weights are then those of z = 0.5 exactly: float64 reference
    ``log p(x|z) + log N(z; 0, I) - log N(z; 0.5, e^-200 I)`` (SciPy), finite, where they used to be NaN."""
    encode, decode, a = _narrow_encoder(0.5, -200.0)
    x = _binary(0, 4)
    z = np.full(Z, 0.5)
    logits = z @ a
    log_lik = (x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)).sum(-1)
    log_q = stats.norm.logpdf(z, 0.5, math.exp(-100.0)).sum()
    want = log_lik + stats.norm.logpdf(z).sum() - log_q
    got = jax.jit(lambda k, x: vae_lib.iwae_bound(k, x, encode, decode, num_samples=5))(jax.random.key(0), x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    mc_elbo = jax.jit(lambda k, x: vae_lib.elbo(k, x, encode, decode, analytic_kl=False, num_samples=3))
    terms = mc_elbo(jax.random.key(0), x)
    np.testing.assert_allclose(float(terms.kl), log_q - stats.norm.logpdf(z).sum(), rtol=1e-5)
    assert np.isfinite(float(terms.elbo))


def test_evaluation_refuses_what_fit_refuses():
    model = _model(0)
    grey = np.random.default_rng(1).random((16, D)).astype(np.float32)
    calls = {
        "evaluate_elbo": lambda x: vae_lib.evaluate_elbo(jax.random.key(0), model, x),
        "importance_log_likelihood": lambda x: vae_lib.importance_log_likelihood(
            jax.random.key(0), model, x, num_samples=4
        ),
        "quadrature_log_likelihood": lambda x: vae_lib.quadrature_log_likelihood(model, x, num_points=20),
    }
    for call in calls.values():
        with pytest.raises(ValueError, match=r"x must be binary .* for a bernoulli decoder"):
            call(grey)
    with pytest.raises(ValueError, match=r"num_points must be an int >= 2, got 1"):
        vae_lib.quadrature_log_likelihood(model, _binary(0, 4), num_points=1)


def test_float64_values_beyond_float32_are_refused_naming_the_argument():
    model = vae_lib.mlp_vae(D, Z, hidden=HIDDEN, likelihood="gaussian", rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(N, D))  # float64
    big = x[:16].copy()
    big[2, 3] = 1e39
    with pytest.raises(ValueError, match=r"x must fit in float32.* up to 1e\+39"):
        vae_lib.evaluate_elbo(jax.random.key(0), model, big)
    init = _leaves(nnx.state(model))
    with pytest.raises(ValueError, match=r"x_test must fit in float32"):
        vae_lib.fit(model, x, epochs=1, x_test=big, **KW)
    assert _same(nnx.state(model), init)  # refused before the first epoch


# --- 5. quadrature on a grid too coarse for the posterior --------------------------------------------------


def _linear_gaussian(seed: int = 0, latent: int = 1):
    """The issue's model: D = 4, W ~ N(0, 25), s^2 = 1e-3, p(z) = N(0, I); the encoder is the exact posterior.

    p(x) = N(b, W^T W + s^2 I) in closed form; q(z|x) = N(S W (x - b) / s^2, S), S = (I + W W^T / s^2)^-1.
    """
    dim, s2 = 4, 1e-3
    rng = np.random.default_rng(seed)
    w, b = rng.normal(0.0, 5.0, size=(latent, dim)), rng.normal(size=dim)
    model = vae_lib.mlp_vae(
        dim, latent, hidden=(), likelihood="gaussian", obs_logvar=math.log(s2), rngs=nnx.Rngs(0)
    )
    cov = np.linalg.inv(np.eye(latent) + w @ w.T / s2)
    gain = cov @ w / s2  # (Z, D)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    model.decoder.out.kernel[...], model.decoder.out.bias[...] = f32(w), f32(b)
    model.encoder.mean.kernel[...], model.encoder.mean.bias[...] = f32(gain.T), f32(-gain @ b)
    model.encoder.logvar.kernel[...] = jnp.zeros((dim, latent))
    model.encoder.logvar.bias[...] = f32(np.log(np.diag(cov)))
    marginal = stats.multivariate_normal(b, w.T @ w + s2 * np.eye(dim))
    x = marginal.rvs(size=40, random_state=rng).astype(np.float32)
    return model, x, marginal.logpdf(x.astype(np.float64)), np.sqrt(np.diag(cov))


def test_quadrature_detects_a_grid_too_coarse_for_narrow_posteriors():
    model, x, exact, std = _linear_gaussian()
    assert std.max() < 0.5 * 12 / 400  # the posterior is narrower than half the default spacing
    with pytest.warns(
        evaluation.CoarseGridWarning, match=r"too coarse for 40 of 40 examples.*num_points >= \d+"
    ):
        coarse = np.asarray(vae_lib.quadrature_log_likelihood(model, x))
    assert np.abs(coarse - exact).max() > 0.05  # it is indeed off: what the warning is for
    with pytest.raises(ValueError, match="too coarse"):
        vae_lib.quadrature_log_likelihood(model, x, coarse_grid="raise")
    # on the grid the warning asks for, no warning; on a finer one, the closed form to 1e-4 nats
    need = math.ceil(12 / (std.min() / 0.65))  # what the warning asks for
    with warnings.catch_warnings():
        warnings.simplefilter("error", evaluation.CoarseGridWarning)
        resolved = np.asarray(vae_lib.quadrature_log_likelihood(model, x, num_points=need))
        fine = np.asarray(vae_lib.quadrature_log_likelihood(model, x, num_points=4 * need))
    assert np.abs(resolved - exact).max() < 5e-3
    np.testing.assert_allclose(fine, exact, atol=1e-4)


# --- 6. memory and unclear errors ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["evaluate_elbo", "importance_log_likelihood", "quadrature_log_likelihood"])
def test_an_evaluation_that_would_not_fit_in_memory_is_refused_before_it_runs(monkeypatch, which):
    """XLA's estimate of one call's memory, against the free memory (here pretended to be none)."""
    model, x = _model(0), _binary(0, 32)
    calls = {
        "evaluate_elbo": lambda: vae_lib.evaluate_elbo(jax.random.key(0), model, x),
        "importance_log_likelihood": lambda: vae_lib.importance_log_likelihood(
            jax.random.key(0), model, x, num_samples=400, sample_chunk=400
        ),
        "quadrature_log_likelihood": lambda: vae_lib.quadrature_log_likelihood(
            model, x, coarse_grid="ignore"
        ),
    }
    hint = {
        "evaluate_elbo": "batch_size",
        "importance_log_likelihood": "sample_chunk",
        "quadrature_log_likelihood": "grid_chunk",
    }
    monkeypatch.setattr(evaluation, "_free_memory", lambda: 0)
    with pytest.raises(
        ValueError, match=rf"needs about .* GiB at once .* more than the 0.00 GiB free: lower {hint[which]}"
    ):
        calls[which]()
    monkeypatch.undo()
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(calls[which]())[0])))  # with the real free memory


def test_the_memory_check_reads_the_free_memory():
    free = evaluation._free_memory()
    assert free is None or 0 < free < 2**50


def test_a_conv_model_encodes_samples_of_batches():
    """The docstring's (K, N, 784) works for the convolutional encoder, as for the MLP's."""
    model = vae_lib.conv_vae(2, channels=(2, 2), hidden=4, rngs=nnx.Rngs(0))
    encode = nnx.jit(lambda m, x: m.encode(x))  # one compiled call, not op-by-op convolutions
    x = jnp.asarray(np.random.default_rng(0).random((3, 5, 784)), jnp.float32)
    mean, logvar = encode(model, x)
    assert mean.shape == logvar.shape == (3, 5, 2)
    rows = encode(model, x[1])
    np.testing.assert_allclose(np.asarray(mean[1]), np.asarray(rows[0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logvar[1]), np.asarray(rows[1]), rtol=1e-6, atol=1e-6)


def test_latent_scatter_takes_string_labels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vae_lib import plotting

    ax = plotting.latent_scatter(np.zeros((4, 2)), np.array(["seven", "one", "seven", "two"]))
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["one", "seven", "two"]
    plt.close("all")
