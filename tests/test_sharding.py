"""Data-parallel training and evaluation over a device mesh (``vae_lib.sharding``, ``fit(mesh=)``).

The truth each test compares against is the same computation on one device without a mesh. Several
devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX starts, and several
processes need ``jax.distributed.initialize``, so both run in subprocesses that print their results as
JSON.

Tolerance: splitting a batch over ``n`` devices changes only the order in which the gradient's sum over
examples is added up (a partial sum per device, then an all-reduce), so parameters agree to float32
rounding. After 3 epochs (96 Adam steps) the measured largest relative difference is about 3e-7; the
tests allow 1e-5. Evaluation splits only the examples of a chunk, which are independent, so it agrees
to 1e-6 nats.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import vae_lib
from vae_lib import sharding

ROOT = Path(__file__).resolve().parents[1]
PARAM_RTOL = 1e-5

# Shared by the worker scripts: a small MLP VAE on 1,024 binarized digits, 3 epochs of batches of 32.
_SETUP = """
import json, os, sys
import jax
import numpy as np
from flax import nnx
import vae_lib
from vae_lib import data

d = data.load_mnist5k()
x_all, x_test = d.x_train[:1024], (d.x_test[:200] > 0.5).astype("float32")

def model():
    return vae_lib.mlp_vae(784, 4, hidden=(32,), rngs=nnx.Rngs(0))

def train(m, x, epochs=3, **kw):
    return vae_lib.fit(m, x, key=jax.random.key(1), epochs=epochs, batch_size=32, binarize=True,
                       progress=False, **kw)

def leaves(m):
    return [np.asarray(a).ravel().tolist() for a in jax.tree.leaves(nnx.state(m))]
"""

_DEVICES_WORKER = """
out, ckpt_dir = {}, sys.argv[1]
m = model(); train(m, x_all); out["one_device"] = leaves(m)
for n in (1, 2, 4, 8):
    m = model(); h = train(m, x_all, mesh=vae_lib.data_mesh(n), x_test=x_test)
    out[f"mesh{n}"] = leaves(m)
    out[f"test_elbo{n}"] = h["test_elbo"]
    out[f"sharding{n}"] = str(jax.tree.leaves(nnx.state(m))[0].sharding.spec)

# evaluation: the same chunks with and without a mesh
m = model(); train(m, x_all, epochs=1)
key = jax.random.key(5)
out["elbo"] = float(vae_lib.evaluate_elbo(key, m, x_test, batch_size=40).elbo)
out["elbo8"] = float(vae_lib.evaluate_elbo(key, m, x_test, batch_size=40, mesh=vae_lib.data_mesh(8)).elbo)
kw = dict(num_samples=20, sample_chunk=10, batch_size=40)
out["iw"] = np.asarray(vae_lib.importance_log_likelihood(key, m, x_test, **kw)).tolist()
iw8 = vae_lib.importance_log_likelihood(key, m, x_test, mesh=vae_lib.data_mesh(8), **kw)
out["iw8"] = np.asarray(iw8).tolist()

# checkpoints cross the device count both ways: 2 epochs on one side, the 3rd on the other
for first, second, name in ((8, None, "sharded_then_one"), (None, 4, "one_then_sharded")):
    path = os.path.join(ckpt_dir, name + ".npz")
    mesh = lambda n: None if n is None else vae_lib.data_mesh(n)
    m = model(); train(m, x_all, epochs=2, checkpoint_path=path, mesh=mesh(first))
    m = model(); train(m, x_all, epochs=3, checkpoint_path=path, resume=True, mesh=mesh(second))
    out[name] = leaves(m)

# bad arguments, named in the error
errors = {}
def error(f):
    try:
        f()
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None
mesh8 = vae_lib.data_mesh(8)
errors["fit_batch"] = error(lambda: vae_lib.fit(model(), x_all, key=jax.random.key(0), epochs=1,
                                                batch_size=36, progress=False, binarize=True, mesh=mesh8))
errors["fit_rows"] = error(lambda: train(model(), x_all[:1020], mesh=mesh8))
errors["eval_batch"] = error(lambda: vae_lib.evaluate_elbo(key, m, x_test, batch_size=36, mesh=mesh8))
errors["num_devices"] = error(lambda: vae_lib.data_mesh(9))
out["errors"] = errors
print("RESULT " + json.dumps(out))
"""

_PROCESS_WORKER = """
pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
mesh = vae_lib.data_mesh()  # the devices of both processes
rows = np.array_split(x_all, nproc)[pid]  # each process passes only its own rows
test_rows = np.array_split(x_test, nproc)[pid]
m = model(); h = train(m, rows, mesh=mesh, x_test=test_rows)
# the same run, checkpointed after 2 epochs (process 0 writes) and resumed for the 3rd
path = os.path.join(sys.argv[4], "run.npz")
train(model(), rows, epochs=2, mesh=mesh, x_test=test_rows, checkpoint_path=path)
resumed = model(); train(resumed, rows, mesh=mesh, x_test=test_rows, checkpoint_path=path, resume=True)
result = {"devices": mesh.shape["data"], "params": leaves(m), "test_elbo": h["test_elbo"]}
result["resumed"] = leaves(resumed)
print("RESULT " + json.dumps(result))
"""


def _run(script: str, *args: str, devices: int, log: Path) -> tuple[subprocess.Popen, Path]:
    """Start ``_SETUP + script`` with ``devices`` CPU devices; its output goes to the file ``log``.

    (A file, not a pipe: two processes in one collective must never block on a full pipe.)
    """
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    code = textwrap.dedent(_SETUP) + textwrap.dedent(script)
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=f, stderr=f)
    return proc, log


def _result(started: tuple[subprocess.Popen, Path], timeout: int = 600) -> dict:
    proc, log = started
    try:
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = [s for s in text.splitlines() if s.startswith("RESULT ")]
    assert lines, text[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _max_rel_diff(a: list, b: list) -> float:
    return max(
        float(np.max(np.abs(np.subtract(x, y))) / np.max(np.abs(y))) for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("eight_devices")
    return _result(_run(_DEVICES_WORKER, str(folder), devices=8, log=folder / "log.txt"))


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_parameters_do_not_depend_on_the_device_count(eight_devices, n):
    assert _max_rel_diff(eight_devices[f"mesh{n}"], eight_devices["one_device"]) <= PARAM_RTOL
    assert eight_devices[f"sharding{n}"] == "P()"  # replicated parameters


def test_test_history_does_not_depend_on_the_device_count(eight_devices):
    # 200 test examples: one chunk of 200 for 1, 2, 4 and 8 devices, so the same samples
    for n in (2, 4, 8):
        np.testing.assert_allclose(eight_devices[f"test_elbo{n}"], eight_devices["test_elbo1"], rtol=1e-5)


def test_evaluation_over_a_mesh_gives_the_same_numbers(eight_devices):
    assert abs(eight_devices["elbo8"] - eight_devices["elbo"]) <= 1e-6 * abs(eight_devices["elbo"])
    np.testing.assert_allclose(eight_devices["iw8"], eight_devices["iw"], rtol=1e-6)


@pytest.mark.parametrize("name", ["sharded_then_one", "one_then_sharded"])
def test_checkpoints_resume_across_device_counts(eight_devices, name):
    assert _max_rel_diff(eight_devices[name], eight_devices["one_device"]) <= PARAM_RTOL


@pytest.mark.parametrize(
    "case, words",
    [
        ("fit_batch", ["batch_size (36)", "multiple", "(8)"]),
        ("fit_rows", ["x_train", "1020", "multiple"]),
        ("eval_batch", ["batch_size (36)", "multiple", "(8)"]),
        ("num_devices", ["num_devices", "at most 8"]),
    ],
)
def test_bad_mesh_arguments_are_named(eight_devices, case, words):
    message = eight_devices["errors"][case]
    assert message is not None and message.startswith("ValueError")
    for w in words:
        assert w in message, message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    """Two processes with 2 CPU devices each (a 4-device mesh over both), each passing half the rows."""
    port = str(_free_port())
    procs = [
        _run(_PROCESS_WORKER, str(i), "2", port, str(tmp_path), devices=2, log=tmp_path / f"{i}.txt")
        for i in (0, 1)
    ]
    one = "m = model(); train(m, x_all)\nprint('RESULT ' + json.dumps(leaves(m)))"
    single = _run(one, devices=1, log=tmp_path / "single.txt")
    results = [_result(p) for p in procs]
    reference = _result(single)
    assert [r["devices"] for r in results] == [4, 4]
    assert results[0]["params"] == results[1]["params"]  # bitwise: the replicated state is one value
    assert results[0]["test_elbo"] == results[1]["test_elbo"]
    assert _max_rel_diff(results[0]["params"], reference) <= PARAM_RTOL
    assert results[0]["resumed"] == results[0]["params"]  # resuming is bitwise the uninterrupted run
    assert results[1]["resumed"] == results[1]["params"]


def test_mesh_must_be_a_mesh_with_a_data_axis():
    model = vae_lib.mlp_vae(4, 2, hidden=(3,), rngs=nnx.Rngs(0))
    x = np.zeros((8, 4), np.float32)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        vae_lib.fit(model, x, key=jax.random.key(0), epochs=1, batch_size=4, progress=False, mesh="data")
    other = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="axis named 'data'"):
        vae_lib.fit(model, x, key=jax.random.key(0), epochs=1, batch_size=4, progress=False, mesh=other)
    with pytest.raises(ValueError, match="axis named 'data'"):
        vae_lib.evaluate_elbo(jax.random.key(0), model, x, mesh=other)
    assert sharding.data_mesh().shape["data"] == len(jax.devices())
