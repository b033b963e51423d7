"""Checkpoints and interrupted or failing training runs.

- A run interrupted after epoch ``n`` and resumed from its checkpoint ends bitwise identical to one that
  was never interrupted (parameters, optimizer state, key, history except wall-clock seconds).
- A crash while a checkpoint is written leaves the previous one intact and no temporary file behind.
- A checkpoint of another architecture, a file that is not a checkpoint, and an archive holding pickled
  objects are refused with a clear ``ValueError`` (and the pickle never runs).
- A non-finite loss or update stops ``fit`` with ``NonFiniteLossError`` naming the step, and the model
  keeps the state from the end of the last complete epoch: exactly that of a run stopped there, and that
  of the last checkpoint.
- A checkpoint holding NaN parameters is refused.
"""

from __future__ import annotations

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import vae_lib
from vae_lib import checkpoint

DATA_DIM, LATENT, HIDDEN = 8, 2, (8,)
N_TRAIN, BATCH = 48, 16  # 3 steps per epoch
STEPS_PER_EPOCH = N_TRAIN // BATCH


def _model(seed: int = 0, hidden=HIDDEN, latent: int = LATENT, likelihood: str = "bernoulli"):
    return vae_lib.mlp_vae(DATA_DIM, latent, hidden=hidden, likelihood=likelihood, rngs=nnx.Rngs(seed))


def _binary(seed: int, n: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, DATA_DIM)) < 0.4).astype(np.float32)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def _assert_bitwise_equal(a, b) -> None:
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _npz_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _fit_state_checkpoint(path, model, *, epoch: int = 1):
    """A checkpoint in fit's format for ``model`` (parameters, Adam state, key), written without training."""
    _, params = nnx.split(model)
    state = (params, optax.adam(1e-3).init(params), jax.random.key(0))
    history = {"epoch": [1], "train_loss": [1.0], "train_elbo": [-1.0], "seconds": [0.1]}
    return checkpoint.save_checkpoint(path, state, {"epoch": epoch, "history": history})


# --- round trip ------------------------------------------------------------------------------------


def test_round_trip_is_bitwise_and_keeps_keys(tmp_path):
    tree = {
        "w": jax.random.normal(jax.random.key(1), (3, 4)),
        "count": jnp.int32(7),
        "nested": [jnp.arange(5, dtype=jnp.float32) / 3, jax.random.key(2)],
    }
    meta = {"epoch": 3, "history": {"loss": [1.5, float("nan")]}}
    path = checkpoint.save_checkpoint(tmp_path / "sub" / "c.npz", tree, meta)
    like = {"w": jnp.zeros((3, 4)), "count": jnp.int32(0), "nested": [jnp.zeros(5), jax.random.key(0)]}
    restored, got_meta = checkpoint.load_checkpoint(path, like)
    assert got_meta["epoch"] == 3 and np.isnan(got_meta["history"]["loss"][1])
    _assert_bitwise_equal(restored["w"], tree["w"])
    _assert_bitwise_equal(restored["count"], tree["count"])
    _assert_bitwise_equal(restored["nested"][0], tree["nested"][0])
    key = restored["nested"][1]
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(tree["nested"][1]))
    assert float(jax.random.uniform(key)) == float(jax.random.uniform(jax.random.key(2)))


# --- (a) interrupted and resumed == uninterrupted ---------------------------------------------------


def test_resumed_run_is_bitwise_identical_to_uninterrupted(tmp_path):
    x, x_test = _binary(0, N_TRAIN), _binary(1, 16)
    kw = dict(key=jax.random.key(42), batch_size=BATCH, learning_rate=3e-3, x_test=x_test, progress=False)
    total, interrupted_after = 4, 2

    model_a = _model(0)
    hist_a = vae_lib.fit(model_a, x, epochs=total, checkpoint_path=tmp_path / "a.npz", **kw)

    # The "interrupted" run: stops after 2 epochs, leaving its checkpoint behind ...
    vae_lib.fit(_model(0), x, epochs=interrupted_after, checkpoint_path=tmp_path / "b.npz", **kw)
    assert _npz_arrays(tmp_path / "b.npz")  # a checkpoint exists
    # ... then a fresh process builds a model with *another* initialization and resumes.
    model_c = _model(123)
    hist_c = vae_lib.fit(model_c, x, epochs=total, checkpoint_path=tmp_path / "b.npz", resume=True, **kw)

    # Parameters: bitwise.
    _assert_bitwise_equal(nnx.state(model_c), nnx.state(model_a))
    # Full training state in the final checkpoints (parameters, Adam moments and count, key): bitwise.
    a, c = _npz_arrays(tmp_path / "a.npz"), _npz_arrays(tmp_path / "b.npz")
    assert sorted(a) == sorted(c)
    # the Adam state is in there: step count, first and second moments of every parameter, and the key
    assert "leaf[1][0].count" in a and int(a["leaf[1][0].count"]) == total * STEPS_PER_EPOCH
    num_params = len(jax.tree.leaves(nnx.state(model_a)))  # 10 weight and bias arrays
    assert sum(k.startswith("leaf[1][0].mu[") for k in a) == num_params
    assert sum(k.startswith("leaf[1][0].nu[") for k in a) == num_params
    assert "leaf[2]" in a
    for k in a:
        if k != "__metadata__":
            assert a[k].dtype == c[k].dtype and a[k].tobytes() == c[k].tobytes(), k
    # History: every value except wall-clock seconds, bitwise (floats compared exactly).
    assert hist_c["epoch"] == [1, 2, 3, 4]
    assert set(hist_a) == set(hist_c)
    for name in hist_a:
        if name != "seconds":
            assert hist_c[name] == hist_a[name], name
    assert len(hist_c["seconds"]) == total
    # The model really was restored and trained on: not its own initialization.
    assert not np.array_equal(_leaves(nnx.state(model_c))[0], _leaves(nnx.state(_model(123)))[0])


def test_resume_of_a_finished_run_loads_it_without_training(tmp_path):
    path = tmp_path / "done.npz"
    kw = dict(key=jax.random.key(0), epochs=3, batch_size=BATCH, checkpoint_path=path, progress=False)
    model = _model(0)
    done = vae_lib.fit(model, _binary(0, N_TRAIN), **kw)
    before = path.read_bytes()
    other = _model(5)
    hist = vae_lib.fit(other, _binary(0, N_TRAIN), resume=True, **kw)
    assert hist == done  # the stored history, nothing appended
    _assert_bitwise_equal(nnx.state(other), nnx.state(model))
    assert path.read_bytes() == before  # nothing trained, nothing written


# --- (b) a crash while writing leaves the previous checkpoint intact --------------------------------


def _raise_in_savez(exc):
    def savez(f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial garbage")  # part of a file was written when the crash came
        raise exc

    return savez


def _failing_replace(src, dst):
    raise OSError(5, "Input/output error during rename")


@pytest.mark.parametrize(
    "target, replacement",
    [
        pytest.param(
            np, ("savez", _raise_in_savez(OSError(28, "No space left on device"))), id="savez-OSError"
        ),
        pytest.param(np, ("savez", _raise_in_savez(KeyboardInterrupt())), id="savez-KeyboardInterrupt"),
        pytest.param(os, ("replace", _failing_replace), id="os.replace-fails"),
    ],
)
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch, target, replacement):
    path = tmp_path / "ckpt.npz"
    old_tree = {"w": jnp.arange(6.0).reshape(2, 3)}
    checkpoint.save_checkpoint(path, old_tree, {"epoch": 1})
    old_bytes = path.read_bytes()

    monkeypatch.setattr(target, *replacement)
    with pytest.raises((OSError, KeyboardInterrupt)):
        checkpoint.save_checkpoint(path, {"w": jnp.ones((2, 3))}, {"epoch": 2})
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]  # no temporary file left
    tree, meta = checkpoint.load_checkpoint(path, {"w": jnp.zeros((2, 3))})
    assert meta == {"epoch": 1}
    _assert_bitwise_equal(tree, old_tree)


def test_save_refuses_unserializable_metadata_and_object_leaves(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(TypeError, match="metadata must be JSON-serializable"):
        checkpoint.save_checkpoint(path, {"w": jnp.ones(2)}, {"when": object()})
    with pytest.raises(TypeError, match=r"tree leaf leaf\['w'\] must be an array"):
        checkpoint.save_checkpoint(path, {"w": object()})
    assert list(tmp_path.iterdir()) == []


# --- (c) another architecture --------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(dict(hidden=(16,)), id="wider-hidden"),
        pytest.param(dict(hidden=(8, 8)), id="deeper"),
        pytest.param(dict(latent=3), id="other-latent-dim"),
        pytest.param(dict(likelihood="gaussian"), id="other-likelihood"),
    ],
)
def test_resume_with_another_architecture_is_a_clear_error(tmp_path, other):
    path = tmp_path / "c.npz"
    _fit_state_checkpoint(path, _model(0))
    x = np.random.default_rng(0).random((N_TRAIN, DATA_DIM)).astype(np.float32)
    with pytest.raises(ValueError, match=r"does not match.*another architecture"):
        vae_lib.fit(
            _model(0, **other),
            (x > 0.5).astype(np.float32),
            key=jax.random.key(0),
            epochs=2,
            batch_size=BATCH,
            checkpoint_path=path,
            resume=True,
            progress=False,
        )


def test_resume_from_a_checkpoint_not_written_by_fit(tmp_path):
    path = tmp_path / "c.npz"
    model = _model(0)
    _, params = nnx.split(model)
    checkpoint.save_checkpoint(path, (params, optax.adam(1e-3).init(params), jax.random.key(0)), {"note": 1})
    with pytest.raises(ValueError, match="not written by fit"):
        vae_lib.fit(
            model,
            _binary(0, N_TRAIN),
            key=jax.random.key(0),
            epochs=2,
            batch_size=BATCH,
            checkpoint_path=path,
            resume=True,
            progress=False,
        )


# --- (d) files that are not checkpoints -------------------------------------------------------------


def _valid_bytes(tmp_path) -> bytes:
    p = checkpoint.save_checkpoint(tmp_path / "valid.npz", {"w": jnp.arange(1000.0)}, {"epoch": 1})
    data = p.read_bytes()
    p.unlink()
    return data


@pytest.mark.parametrize(
    "make, message",
    [
        pytest.param(lambda d: os.urandom(2048), "not a readable vae_lib checkpoint", id="garbage-bytes"),
        pytest.param(lambda d: b"", "not a readable vae_lib checkpoint", id="empty-file"),
        pytest.param(lambda d: d[: len(d) // 2], "not a readable vae_lib checkpoint", id="truncated-half"),
        pytest.param(lambda d: d[:-10], "not a readable vae_lib checkpoint", id="truncated-tail"),
        pytest.param(
            lambda d: d[:100] + bytes(200) + d[300:], "not a readable vae_lib checkpoint", id="zeroed-middle"
        ),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(make(_valid_bytes(tmp_path)))
    with pytest.raises(ValueError, match=message):
        checkpoint.load_checkpoint(path, {"w": jnp.zeros(1000)})


def test_npz_without_metadata_or_with_bad_metadata_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not a vae_lib checkpoint .no __metadata__"):
        checkpoint.load_checkpoint(tmp_path / "plain.npz", {"w": jnp.zeros(3)})
    np.savez(tmp_path / "badmeta.npz", __metadata__=np.array("{not json"), **{"leaf['w']": np.zeros(3)})
    with pytest.raises(ValueError, match="metadata is not valid JSON"):
        checkpoint.load_checkpoint(tmp_path / "badmeta.npz", {"w": jnp.zeros(3)})
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a readable vae_lib checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "single.npy", {"w": jnp.zeros(3)})


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "nothing.npz", {"w": jnp.zeros(3)})


def test_wrong_shape_or_dtype_entry_is_refused(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "c.npz", {"w": jnp.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"entry \"leaf\['w'\]\" has shape \(2, 3\).*expected \(3, 2\)"):
        checkpoint.load_checkpoint(path, {"w": jnp.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"dtype float32.*expected \(2, 3\) and int32"):
        checkpoint.load_checkpoint(path, {"w": jnp.zeros((2, 3), jnp.int32)})
    with pytest.raises(ValueError, match="not a PRNG key of the expected kind"):
        checkpoint.load_checkpoint(path, {"w": jax.random.key(0)})


# --- (e) no pickle ---------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_an_archive_with_pickled_objects_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    np.savez(path, __metadata__=np.array("{}"), **{"leaf['w']": evil})  # NumPy pickles object arrays
    assert "leaf['w'].npy" in zipfile.ZipFile(path).namelist()

    with pytest.raises(ValueError, match="pickled objects"):
        checkpoint.load_checkpoint(path, {"w": jnp.zeros(1)})
    assert not marker.exists()

    # The payload is live: loading it with pickle allowed would have run it (so the test can fail).
    with np.load(path, allow_pickle=True) as f:
        f["leaf['w']"]
    assert marker.exists()


# --- non-finite losses and updates stop training at the right step -----------------------------------


def _nan_at_step(bad_step: int) -> optax.GradientTransformation:
    """A pass-through transformation that turns the updates of step ``bad_step`` (0-based) into NaN."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        hit = count == bad_step
        return jax.tree.map(lambda u: jnp.where(hit, jnp.nan, u), updates), count + 1

    return optax.GradientTransformation(init, update)


def test_nan_update_at_an_epoch_boundary_restores_the_exact_previous_parameters(tmp_path):
    x = _binary(0, N_TRAIN)
    bad_step = 2 * STEPS_PER_EPOCH  # the update of the first step of epoch 3 is NaN ...
    opt = optax.chain(optax.sgd(0.1), _nan_at_step(bad_step))  # SGD: compiles faster than Adam
    kw = dict(key=jax.random.key(7), batch_size=BATCH, optimizer=opt, progress=False)

    model = _model(0)
    init = [a.copy() for a in _leaves(nnx.state(model))]
    with pytest.raises(  # ... so the loss of the next step is the first non-finite one
        vae_lib.NonFiniteLossError,
        match=rf"loss became non-finite at step {bad_step + 1} \(epoch 3, batch 2 of 3\)",
    ) as info:
        vae_lib.fit(model, x, epochs=5, checkpoint_path=tmp_path / "c.npz", **kw)
    err = info.value
    assert err.step == bad_step + 1
    assert err.history["epoch"] == [1, 2]  # the completed epochs
    after = _leaves(nnx.state(model))
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, init, strict=True))

    # The same training stopped after exactly bad_step steps (two whole epochs): bitwise the same.
    reference = _model(0)
    vae_lib.fit(reference, x, epochs=2, **kw)
    _assert_bitwise_equal(nnx.state(model), nnx.state(reference))
    # ... and the checkpoint holds the last completed epoch, not the failed one.
    (params, _, _), meta = checkpoint.load_checkpoint(
        tmp_path / "c.npz", (nnx.split(model)[1], opt.init(nnx.split(model)[1]), jax.random.key(0))
    )
    assert meta["epoch"] == 2
    _assert_bitwise_equal(params, nnx.state(reference))


@pytest.mark.parametrize(
    "bad_step, message",
    [
        pytest.param(
            STEPS_PER_EPOCH + 1,
            r"the loss became non-finite at step 5 \(epoch 2, batch 3 of 3\)",
            id="mid-epoch",
        ),
        pytest.param(
            2 * STEPS_PER_EPOCH - 1,
            r"the parameters or optimizer state .* at step 5 \(epoch 2, batch 3 of 3\)",
            id="last-step-of-the-epoch",
        ),
    ],
)
def test_nan_update_inside_an_epoch_keeps_the_state_of_the_last_complete_epoch(tmp_path, bad_step, message):
    """A NaN update in epoch 2 (in its middle, or in its last step, where no later loss shows it): the model
    is left as the checkpoint of epoch 1 has it, bitwise."""
    x = _binary(0, N_TRAIN)
    opt = optax.chain(optax.sgd(0.1), _nan_at_step(bad_step))  # SGD: compiles faster than Adam
    model = _model(0)
    with pytest.raises(vae_lib.NonFiniteLossError, match=message) as info:
        vae_lib.fit(
            model,
            x,
            key=jax.random.key(7),
            epochs=5,
            batch_size=BATCH,
            optimizer=opt,
            checkpoint_path=tmp_path / "c.npz",
            progress=False,
        )
    assert info.value.step == 5 and info.value.history["epoch"] == [1]
    (params, _, _), meta = checkpoint.load_checkpoint(
        tmp_path / "c.npz", (nnx.split(model)[1], opt.init(nnx.split(model)[1]), jax.random.key(0))
    )
    assert meta["epoch"] == 1
    _assert_bitwise_equal(nnx.state(model), params)


def test_a_checkpoint_with_nan_parameters_is_refused(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "c.npz", {"w": jnp.array([1.0, jnp.nan])})
    with pytest.raises(ValueError, match=r"entry \"leaf\['w'\]\" must be finite, got 1 NaN"):
        checkpoint.load_checkpoint(path, {"w": jnp.zeros(2)})


def test_a_data_point_that_overflows_the_loss_stops_at_step_zero():
    # Finite in float32 (< 3.4e38), but its squared error overflows: the Gaussian loss is +inf at once.
    x = np.random.default_rng(0).normal(size=(BATCH, DATA_DIM)).astype(np.float32)
    x[3, 5] = 1e30
    model = _model(0, likelihood="gaussian")
    init = [a.copy() for a in _leaves(nnx.state(model))]
    with pytest.raises(vae_lib.NonFiniteLossError, match=r"step 0 \(epoch 1, batch 1 of 1\)") as info:
        vae_lib.fit(
            model,
            x,
            key=jax.random.key(0),
            epochs=2,
            batch_size=BATCH,
            optimizer=optax.sgd(0.1),
            progress=False,
        )
    assert info.value.step == 0 and info.value.history["epoch"] == []
    _assert_bitwise_equal(nnx.state(model), init)  # nothing was applied
