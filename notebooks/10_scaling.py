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
# # Chapter 10 — When one device is not enough: data-parallel training over a device mesh
#
# Every chapter so far trained on one device: a laptop's CPU. A researcher who takes the same VAE to full
# data sets, larger images or a GPU node wants the same `fit` on several devices, and later on several
# machines. JAX is already the distributed engine for this: one names *where* each array lives (a
# *sharding* over a *mesh* of devices) and `jax.jit` compiles one program that runs on all of them, with
# the communication inserted by the compiler. This chapter builds that up from the ground, on eight devices
# simulated on the CPU, and then uses it through `vae_lib.fit(..., mesh=...)`.
#
# **What you will learn**
#
# - How to get eight (simulated) devices on a laptop, and why the setting must come **before** `import jax`.
# - **Meshes, partition specs and named shardings**: how an array is laid out over devices, shown shard by
#   shard.
# - What `jax.jit` does with a sharded input: which operations need no communication, which need an
#   **all-reduce**, and how to find the collectives XLA inserted by reading the compiled program.
# - **Data parallelism**: why the gradient of a batch split over $n$ devices is one all-reduce per step,
#   written by hand for a VAE and then used through `fit(..., mesh=...)`, with the **same parameters on 1
#   and 8 devices** to float32 rounding.
# - **Where the time goes**, measured: why eight simulated devices on two cores are *slower* than one,
#   and what would change on real hardware.
# - A **full-size data set** (60,000 images) trained with a checkpoint written on two devices and resumed on
#   one.
# - What changes on a **GPU node** and on **several hosts** (`jax.distributed.initialize`), with a
#   two-process script you can run on one machine.
#
# **Prerequisites**: Chapter 4 (an MLP VAE on the digits, `vae_lib.fit`, dynamic binarization). No maths
# beyond the ELBO's gradient being an average over the batch.
#
# **Hardware.** This chapter was executed on a machine with **2 CPU cores and no GPU**; the eight devices
# are simulated, so the timings below are CPU figures and say nothing about GPU speed. Section 8 says what
# changes on a GPU node; `benchmarks/scaling.py` runs unchanged there and prints the real numbers.
#
# A note on the article this course grew out of: among VAE's challenges it lists that training "needs many
# rounds of iteration to optimize the parameters". More devices do not reduce the number of iterations:
# with the same global batch, data parallelism runs the *same* steps (Section 5 checks that the results
# are the same), and can only make each step take less time, when the hardware is really there
# (Section 6 shows what happens when it is not).

# %% [markdown]
# ## 1. Eight devices on a laptop
#
# XLA's CPU backend can pretend that the machine has $n$ separate devices:
# `XLA_FLAGS=--xla_force_host_platform_device_count=8`. Each simulated device has its own buffers and runs
# its part of a program on the threads of the one process, and the collectives (all-reduce, all-gather)
# between them are real memory copies and synchronizations. It is the standard way to write and test
# multi-device code without the hardware (the JAX documentation and the UvA tutorials use it).
#
# **Why the flag must be set before `import jax`.** JAX creates its backends (the "clients" that own the
# devices) once per process, the first time anything needs a device, and the CPU client reads `XLA_FLAGS`
# at that moment. Setting the variable afterwards changes nothing: the process keeps the devices it was
# born with. Importing JAX (or a library that imports it, such as `vae_lib` or Flax) does not always create
# the client, but many things do (creating an array, a PRNG key, `jax.devices()`), so the only safe rule is:
# set the flag in the first cell, before any import of JAX. That is why this chapter cannot share a kernel
# with another: `nbval` and `scripts/build_book.py` run each chapter in a fresh kernel, so the flag holds
# here and nowhere else. (JAX also has a configuration option for the same thing,
# `jax.config.update("jax_num_cpu_devices", 8)`, with the same rule: before the backend starts.)
#
# The cell also sets `JAX_PLATFORMS=cpu` (read at the same moment), so that on a machine with a GPU the
# chapter still runs on the eight CPU devices its checks are written for; on a GPU node, delete both
# settings to use the GPUs (Section 8).

# %%
import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:  # keep any flags the reader set
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
os.environ["JAX_PLATFORMS"] = "cpu"  # the 8 simulated CPU devices even where a GPU is present

import collections  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib import sharding  # noqa: E402
from vae_lib.data import DownloadError, binarize, load_mnist, load_mnist5k  # noqa: E402
from vae_lib.sharding import data_mesh  # noqa: E402

plt.rcParams["figure.dpi"] = 80
T_START, CPU_START = time.perf_counter(), time.process_time()

key = jax.random.key(10)  # the chapter's one seed; every random draw below uses a key split from it
(
    k_test_bin,
    k_init,
    k_step,
    k_step_bin,
    k_fit,
    k_eval,
    k_full_bin,
    k_full_fit,
    k_exercise,
) = jax.random.split(key, 9)

devices = jax.devices()
print(f"{len(devices)} devices: {devices}")
print(
    f"platform {devices[0].platform!r}, {os.cpu_count()} CPU cores, process {jax.process_index()} of {jax.process_count()}"
)
assert len(devices) == 8 and devices[0].platform == "cpu"

# %% [markdown]
# Eight `CpuDevice`s, all in one process. On a GPU node without the flag the same call lists the GPUs
# (`CudaDevice(id=0)`, ...); on several hosts after `jax.distributed.initialize()` it lists the devices of
# every process (Section 8).

# %% [markdown]
# ## 2. Meshes, partition specs and named shardings
#
# Three objects describe where an array lives.
#
# - A **mesh** (`jax.sharding.Mesh`) arranges devices in an $n$-dimensional grid and names each grid axis.
#   Data parallelism needs one axis; we call it `"data"`. A mesh of shape `(4, 2)` with axes
#   `("data", "model")` would let a batch be split four ways and each weight matrix two ways.
# - A **partition spec** (`PartitionSpec`, written `P`) says, for each axis of an *array*, which mesh axis
#   splits it: `P("data", None)` splits the array's first axis over the mesh's `"data"` axis and keeps the
#   second whole; `P()` splits nothing, so every device holds a full copy (*replicated*).
# - A **named sharding** (`NamedSharding(mesh, spec)`) is the pair; `jax.device_put(x, sharding)` places
#   an array accordingly, and every `jax.Array` carries its `.sharding`.
#
# The mesh's axis names are what later code refers to, so the same program works on any number of devices.

# %%
mesh8 = Mesh(np.array(jax.devices()), ("data",))  # what vae_lib.sharding.data_mesh() builds
rows8 = NamedSharding(mesh8, P("data", None))  # split axis 0 over "data": a batch's rows
x = jax.device_put(jnp.arange(16 * 4, dtype=jnp.float32).reshape(16, 4), rows8)  # (16, 4)
print(x.sharding)
jax.debug.visualize_array_sharding(x)

# %% [markdown]
# The picture is the array's 16 rows, cut into eight blocks of two rows, one per device. The same layout,
# shard by shard: each device holds a $(2, 4)$ piece, and `index` says which slice of the global array it is.

# %%
for shard in x.addressable_shards[:3]:
    print(
        f"{shard.device}: rows {shard.index[0].start}:{shard.index[0].stop}, local shape {shard.data.shape}"
    )
print("...")
assert len(x.addressable_shards) == 8
assert all(s.data.shape == (2, 4) for s in x.addressable_shards)
# vae_lib's helpers build the same shardings (one place in the library says where arrays go):
assert sharding.rows(data_mesh(), 2) == rows8
assert sharding.replicated(data_mesh()) == NamedSharding(mesh8, P())
assert data_mesh() == mesh8

# %% [markdown]
# A replicated array looks different: every device holds all 16 rows. A two-axis mesh shows how one spec
# entry per array axis combines: on a $4 \times 2$ mesh, `P("data", "model")` cuts the rows four ways and
# the columns two ways, eight tiles in all.

# %%
replicated_x = jax.device_put(x, NamedSharding(mesh8, P()))
jax.debug.visualize_array_sharding(replicated_x)
assert all(s.data.shape == (16, 4) for s in replicated_x.addressable_shards)

mesh2d = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
tiles = jax.device_put(x, NamedSharding(mesh2d, P("data", "model")))
jax.debug.visualize_array_sharding(tiles)
assert all(s.data.shape == (4, 2) for s in tiles.addressable_shards)

# %% [markdown]
# ## 3. Computation follows the data: what `jax.jit` does with a sharded input
#
# Give `jax.jit` sharded arrays and it compiles one program for every device: the compiler propagates the
# input shardings to every intermediate array, works out each device's piece, and inserts the
# communication the program needs. The approach is GSPMD's (Xu et al., 2021); in the JAX of this course
# the propagation is done by its successor in XLA, Shardy (the `sdy.sharding` annotation of the lowered
# program printed below), and XLA's SPMD partitioner writes the per-device program. We never write a collective
# ourselves. Three functions of
# the row-sharded `x` show the three cases:
#
# - `jnp.sin(x) * 2` works element by element: each device transforms its own rows, **no communication**.
# - `x.sum(axis=1)` sums within each row, and every row is on one device: **no communication** either.
# - `x.sum(axis=0)` sums *across* rows, which live on eight devices: each device sums its two rows, then
#   the eight partial sums are added together and the total given to every device: an **all-reduce**.
#
# To see what XLA did, compile ahead of time (`jax.jit(f).lower(x).compile()`) and read the compiled
# program's text (HLO). The *lowered* program, before partitioning, holds only sharding annotations; the
# collectives appear in the compiled, per-device program.

# %%
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(compiled_text: str) -> collections.Counter:
    """How many collective operations of each kind a compiled (HLO) program holds."""
    found = re.findall(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(", compiled_text)
    return collections.Counter(found)


programs = {
    "sin(x) * 2": lambda a: jnp.sin(a) * 2,
    "x.sum(axis=1)": lambda a: a.sum(axis=1),
    "x.sum(axis=0)": lambda a: a.sum(axis=0),
}
counts = {}
for name, f in programs.items():
    lowered = jax.jit(f).lower(x)
    compiled = lowered.compile()
    counts[name] = collectives(compiled.as_text())
    out = jax.jit(f)(x)
    before = lowered.as_text()  # StableHLO: sharding annotations, no collective yet
    assert "sharding" in before and "all_reduce" not in before and "all-reduce" not in before
    print(
        f"{name:14s} collectives after partitioning: {str(dict(counts[name]) or 'none'):18} output spec: {out.sharding.spec}"
    )
assert counts["sin(x) * 2"] == collections.Counter() and counts["x.sum(axis=1)"] == collections.Counter()
assert counts["x.sum(axis=0)"] == collections.Counter({"all-reduce": 1})
np.testing.assert_allclose(jax.jit(programs["x.sum(axis=0)"])(x), np.asarray(x).sum(axis=0))
lowered_text = jax.jit(programs["x.sum(axis=0)"]).lower(x).as_text()
entry = next(line.strip() for line in lowered_text.splitlines() if "func.func public @main" in line)
assert 'sdy.sharding<@mesh, [{"data"}, {}]>' in entry  # Shardy's annotation: P("data", None)
print("lowered, x.sum(axis=0):", entry[: entry.index("->")].strip())
print(
    "compiled:",
    next(
        line.strip()
        for line in jax.jit(programs["x.sum(axis=0)"]).lower(x).compile().as_text().splitlines()
        if " all-reduce(" in line
    ),
)

# %% [markdown]
# The outputs keep the layout the computation implies: the element-wise result and the per-row sums stay
# split over `"data"`, the column sums are replicated (`P()`, every device holds the 4 totals). The two
# lines printed last are the same sum before and after partitioning. The lowered program's entry point
# carries only an annotation on its argument, `sdy.sharding<@mesh, [{"data"}, {}]>` (Shardy's way of
# writing `P("data", None)`) and works on the global `tensor<16x4xf32>`; the compiled program holds the
# collective itself: an `all-reduce` of a `f32[4]` (each device's column sums of its two rows) over all
# eight devices of the mesh's axis (`replica_groups`), whose `to_apply` computation is an addition.

# %% [markdown]
# ## 4. A data-parallel training step, written by hand
#
# The ELBO's gradient over a batch of $B$ examples is an average of per-example gradients:
#
# $$\nabla_\theta \frac{1}{B}\sum_{i=1}^B \mathcal{L}(x_i) = \frac{1}{B}\sum_{d=1}^n \underbrace{\sum_{i \in \text{shard}_d} \nabla_\theta \mathcal{L}(x_i)}_{\text{computed on device } d}.$$
#
# So if the batch's rows are split over $n$ devices and the parameters are replicated, each device computes
# the gradient of its own $B/n$ rows, one all-reduce adds the $n$ partial gradients, and every device then
# holds the same full gradient and applies the same Adam update to its copy of the parameters, which
# therefore stay identical everywhere. This is **data parallelism**. In JAX it needs no new code: the
# ordinary one-device train step (as in Flax's VAE example), called with a row-sharded batch and
# replicated parameters, *is* the data-parallel step, because `x.sum(axis=0)` of Section 3 is exactly what the gradient of a batch mean
# contains.

# %%
model = vae_lib.mlp_vae(784, 20, hidden=(200,), rngs=nnx.Rngs(k_init))  # 784-200-20
graphdef, params = nnx.split(model)
tx = optax.adam(1e-3)
n_params = sum(a.size for a in jax.tree.leaves(params))


def train_step(params, opt_state, key, xb):
    """One Adam step on ``-ELBO`` of a batch ``xb (B, 784)``, binary; loss = mean over the batch."""

    def loss_fn(p):
        m = nnx.merge(graphdef, p)
        return -vae_lib.elbo(key, xb, m.encode, m.decode).objective

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


digits = load_mnist5k()
xb = binarize(k_step_bin, digits.x_train[:128])  # (128, 784) binary
step = jax.jit(train_step)
# The same key on purpose, twice: the 1- and 8-device steps must draw the same noise to be compared.
one = step(params, tx.init(params), k_step, jnp.asarray(xb))  # one device
args8 = (*sharding.replicate(mesh8, (params, tx.init(params), k_step)), sharding.shard_rows(mesh8, xb))
eight = step(*args8)  # 16 rows per device, parameters replicated
hlo = step.lower(*args8).compile().as_text()


def relative_difference(a, b) -> float:
    """``||a - b|| / ||b||`` over all the leaves of two pytrees of arrays."""
    flat = [
        (np.asarray(u, np.float64).ravel(), np.asarray(v, np.float64).ravel())
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return math.sqrt(sum(((u - v) ** 2).sum() for u, v in flat) / sum((v**2).sum() for _, v in flat))


step_diff = relative_difference(eight[0], one[0])
print(f"{n_params:,} parameters; collectives in the compiled 8-device step: {dict(collectives(hlo))}")
ar = next(line for line in hlo.splitlines() if " all-reduce(" in line)
operands = re.findall(r"f32\[[\d,]*\]", ar.split("all-reduce(")[0])
print(f"the all-reduce's {len(operands)} operands: {' '.join(operands)}")
print(
    f"loss on 1 device {float(one[2]):.4f}, on 8 devices {float(eight[2]):.4f}; parameters after the step differ by {step_diff:.1e} (relative)"
)
assert collectives(hlo) == collections.Counter({"all-reduce": 1})
assert len(operands) == 12 and step_diff < 1e-6
assert all(a.sharding.is_fully_replicated for a in jax.tree.leaves(eight[0]))

# %% [markdown]
# XLA inserted **one** all-reduce per step, and it carries **twelve** arrays: the ten gradients (a weight
# matrix and a bias for each of the five layers: 784→200, 200→20 twice for the mean and log-variance,
# 20→200, 200→784) and two scalars: sums over the batch computed in the forward pass, from which the loss
# is formed. The compiler *combined* what would be twelve separate all-reduces into
# one, which matters when each collective has a fixed latency. The parameters after the step are
# replicated, and equal to the one-device step's to float32 rounding (relative difference printed above):
# the sums are added in another order, nothing else changes. The random draws are the same too: what a
# `jax.jit` program computes never depends on how its arrays are sharded (only the order of float sums
# may change), so `jax.random` gives the same noise for a key on one device or eight. What the setting
# `jax_threefry_partitionable` (on by default since JAX 0.5) adds is speed: it lets the partitioner have each
# device generate only its own rows' random bits, with no communication and no full-size draw on every
# device (with it off, the values for a key are different, but again the same on any sharding).

# %% [markdown]
# ## 5. The same `fit` on 1 and 8 devices
#
# `vae_lib.fit(..., mesh=mesh)` does the above inside its compiled epoch (`vae_lib/training.py`): the data
# set's rows are split over the mesh's `"data"` axis, the parameters and Adam's state are replicated, and
# inside the `lax.scan` over the batches a sharding constraint splits each batch's rows over the devices.
# `batch_size` stays the *global* batch (128 here, so 16 rows per device on 8 devices), so the optimization
# is the same whatever the device count, and so are the results. We train the same model from the same
# key for 3 epochs on the 4,000 training digits, without a mesh and on meshes of 2, 4 and 8 devices, and
# compare the parameters. Each `fit` call is made twice: the first compiles the epoch for that mesh and
# gives the parameters, the second (same settings, the compiled epoch reused) is timed.

# %%
x_train = digits.x_train  # (4000, 784) grey levels in [0, 1], binarized per batch by fit
x_test = binarize(k_test_bin, digits.x_test)  # (1000, 784), fixed binarization
EPOCHS, TIMED_EPOCHS = 3, 2


def new_model():
    """The same 784-200-20 MLP VAE, initialized from the same key, for every run."""
    return vae_lib.mlp_vae(784, 20, hidden=(200,), rngs=nnx.Rngs(k_init))


runs = {}
for n in (1, 2, 4, 8):
    mesh = None if n == 1 else data_mesh(n)
    m = new_model()
    hist = vae_lib.fit(m, x_train, key=k_fit, epochs=EPOCHS, binarize=True, progress=False, mesh=mesh)
    c0, t0 = time.process_time(), time.perf_counter()
    timed = vae_lib.fit(  # the same run again (same key on purpose), its epoch now compiled: timed
        new_model(), x_train, key=k_fit, epochs=TIMED_EPOCHS, binarize=True, progress=False, mesh=mesh
    )
    cpu = (time.process_time() - c0) / TIMED_EPOCHS
    runs[n] = dict(
        params=nnx.state(m),
        elbo=hist["train_elbo"][-1],
        wall=statistics.median(timed["seconds"]),
        cpu=cpu,
        model=m,
    )
    print(
        f"{n} device(s): last train ELBO {hist['train_elbo'][-1]:.4f}, epoch {runs[n]['wall']:.3f} s wall / {cpu:.3f} s CPU"
    )

diffs = {n: relative_difference(runs[n]["params"], runs[1]["params"]) for n in (2, 4, 8)}
print(
    "relative parameter difference to the 1-device run after 3 epochs:",
    {n: f"{d:.1e}" for n, d in diffs.items()},
)
elbo_gap = max(abs(runs[n]["elbo"] - runs[1]["elbo"]) for n in (2, 4, 8))
print(f"largest difference of the last training ELBO to the 1-device run: {elbo_gap:.1e} nats")
assert all(d < 1e-5 for d in diffs.values())
assert elbo_gap < 1e-3

# %% [markdown]
# After 3 epochs (93 Adam steps) the parameters on 2, 4 and 8 devices differ from the one-device run by
# a relative $6$ to $7 \times 10^{-8}$ (over all 0.33 M parameters; the values are printed above), while the
# last training ELBO is the same float32 number on every device count (difference 0 printed).
# The parameter difference is float32 rounding: each step's gradient is summed in
# another order (partial sums on each device, then the all-reduce), the rounding differences enter Adam,
# and they grow over the steps (from $1.3 \times 10^{-8}$ after Section 4's single step) without changing
# anything a reader of the training curve could see. The check uses the tolerance $10^{-5}$ of the issue that asked for this feature;
# `tests/test_sharding.py` runs the same comparison as a test.
#
# Evaluation shards the same way: `evaluate_elbo(..., mesh=)` splits each chunk of test examples over the
# devices and returns the same estimate (the same chunks, so the same samples), as the next cell checks on
# the 1,000 test digits.

# %%
elbo_one = vae_lib.evaluate_elbo(k_eval, runs[8]["model"], x_test, batch_size=200)
elbo_eight = vae_lib.evaluate_elbo(k_eval, runs[8]["model"], x_test, batch_size=200, mesh=mesh8)
eval_gap = abs(float(elbo_one.elbo) - float(elbo_eight.elbo))
print(
    f"test ELBO on 1 device {float(elbo_one.elbo):.4f} nats, on 8 devices {float(elbo_eight.elbo):.4f} nats "
    f"(difference {eval_gap:.1e})"
)
assert eval_gap < 1e-3

# %% [markdown]
# ## 6. Where the time goes, and why eight simulated devices are slower than one
#
# The timed second calls above give each epoch's wall time (from `fit`'s history) and its CPU time (all
# threads of this process). The throughput is the 3,968 examples of an epoch (31 batches of 128) per
# second of wall time.

# %%
examples = (x_train.shape[0] // 128) * 128
print(f"{'devices':>8} {'examples/s':>11} {'speed-up':>9} {'efficiency':>11} {'CPU s/epoch':>12}")
for n, r in runs.items():
    rate = examples / r["wall"]
    speedup = runs[1]["wall"] / r["wall"]
    print(f"{n:>8} {rate:>11,.0f} {speedup:>9.2f} {speedup / n:>11.2f} {r['cpu']:>12.3f}")
cpu_ratio = runs[8]["cpu"] / runs[1]["cpu"]
print(
    f"8 devices cost {cpu_ratio:.1f}x the CPU time of 1 device per epoch; load average {os.getloadavg()[0]:.1f}"
)
assert runs[8]["wall"] > runs[1]["wall"] and 1.5 < cpu_ratio < 10  # 3.0 when written

# %% [markdown]
# Eight devices are **slower** than one here, and they use 3.0 times the CPU time of one device for the
# same epoch. (The wall times of this shared machine are noisy, as the printed load average warns, and can
# put 2 or 4 devices near 1; the CPU column is the steady one.) Nothing is wrong with the program; the
# hardware is not there. The eight "devices" share the machine's
# two cores: the arithmetic of an epoch is the same (the same 3,968 examples go
# through the same matrix products), it cannot run on more than two cores whatever the device count, and
# the sharded program adds work that a single device does not do. To see how much, we time the pieces of
# one epoch's 31 steps separately, on 1 and on 8 devices, with `jax.shard_map` (which runs a function on
# each device's own piece, so we can leave the communication out or time it alone):
#
# - **gradients**: forward and backward pass of each device's rows ($128/n$), no communication;
# - **Adam**: the optimizer update of all 0.33 M parameters, which every device does on its own replica;
# - **all-reduce**: the sum of a gradient-sized set of arrays over the devices, nothing else.

# %%
STEPS = examples // 128  # 31 steps, as in an epoch


def time_it(f, *args, repeats=3):
    """Median wall and CPU seconds of ``f(*args)`` (compiled first)."""
    jax.block_until_ready(f(*args))
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(f(*args))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def loss_of(p, k, rows):
    m = nnx.merge(graphdef, p)
    return -vae_lib.elbo(k, rows, m.encode, m.decode).objective


def pieces(n):
    mesh = data_mesh(n)
    # k_step again: the noise does not matter for timing, and one key keeps 1 and 8 devices alike
    p, opt_state, k = sharding.replicate(mesh, (params, tx.init(params), k_step))
    rows = sharding.shard_rows(mesh, xb)

    @jax.jit
    @functools.partial(
        jax.shard_map, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=P(), check_vma=False
    )
    def gradients(p, k, rows):  # each device: its 128/n rows, 31 times, no all-reduce
        def body(i, acc):
            g = jax.grad(loss_of)(
                p, jax.random.fold_in(k, i), rows + 0 * acc
            )  # acc: no hoisting out of the loop
            return acc + 0 * sum(jnp.sum(a) for a in jax.tree.leaves(g))

        return jax.lax.fori_loop(0, STEPS, body, jnp.float32(0))

    @jax.jit
    def adam(p, opt_state):  # every device updates its full replica, 31 times
        def body(i, c):
            u, s = tx.update(c[0], c[1], c[0])
            return optax.apply_updates(c[0], u), s

        return jax.lax.fori_loop(0, STEPS, body, (p, opt_state))

    @jax.jit
    @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(),), out_specs=P(), check_vma=False)
    def all_reduce(g):  # a gradient-sized pytree summed over the devices, 31 times
        return jax.lax.fori_loop(
            0, STEPS, lambda i, g: jax.tree.map(lambda a: jax.lax.psum(a, "data") / n, g), g
        )

    return {
        "gradients": time_it(gradients, p, k, rows),
        "Adam": time_it(adam, p, opt_state),
        "all-reduce": time_it(all_reduce, p),
    }


parts = {n: pieces(n) for n in (1, 8)}
print(f"{'per epoch (31 steps)':<22} {'1 device: wall / CPU':>22} {'8 devices: wall / CPU':>23}")
for name in parts[1]:
    (w1, c1), (w8, c8) = parts[1][name], parts[8][name]
    print(f"{name:<22} {w1 * 1e3:>10.0f} / {c1 * 1e3:>5.0f} ms {w8 * 1e3:>11.0f} / {c8 * 1e3:>5.0f} ms")
print(
    f"{'whole epoch (fit)':<22} {runs[1]['wall'] * 1e3:>10.0f} / {runs[1]['cpu'] * 1e3:>5.0f} ms {runs[8]['wall'] * 1e3:>11.0f} / {runs[8]['cpu'] * 1e3:>5.0f} ms"
)
cpu_of = {n: {name: c for name, (_, c) in parts[n].items()} for n in (1, 8)}
print(
    "CPU, 8 devices / 1 device: "
    + ", ".join(f"{name} {cpu_of[8][name] / cpu_of[1][name]:.1f}x" for name in cpu_of[1])
    + f"; the all-reduce is {cpu_of[8]['all-reduce'] / runs[8]['cpu']:.0%} of the 8-device epoch's CPU,"
    + f" the untimed rest {1 - sum(cpu_of[8].values()) / runs[8]['cpu']:.0%}"
)
assert cpu_of[8]["gradients"] < 2 * cpu_of[1]["gradients"]  # the same arithmetic, split eight ways
assert 2 * cpu_of[1]["Adam"] < cpu_of[8]["Adam"] < 16 * cpu_of[1]["Adam"]  # eight replicas of the update
assert cpu_of[8]["all-reduce"] > 5 * cpu_of[1]["all-reduce"]  # one device: nothing to add up
assert runs[8]["cpu"] > sum(cpu_of[8].values())  # the rest: the epoch's data shuffle, synchronization
assert 0.05 < cpu_of[8]["all-reduce"] / runs[8]["cpu"] < 0.5  # 18% when written

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
ns = list(runs)
ax0.bar([str(n) for n in ns], [examples / runs[n]["wall"] for n in ns], color="tab:blue")
ax0.set_xlabel("devices (simulated on 2 CPU cores)")
ax0.set_ylabel("training throughput (examples / s)")
ax0.set_title(f"fit's epoch (wall time, load average {os.getloadavg()[0]:.0f})")
bottom = np.zeros(2)
for name, colour in zip(parts[1], ("tab:green", "tab:orange", "tab:red"), strict=True):
    vals = np.array([cpu_of[1][name], cpu_of[8][name]]) * 1e3
    ax1.bar(["1 device", "8 devices"], vals, bottom=bottom, color=colour, label=name)
    bottom += vals
ax1.plot(
    ["1 device", "8 devices"], [runs[1]["cpu"] * 1e3, runs[8]["cpu"] * 1e3], "ko--", label="whole epoch (fit)"
)
ax1.set_ylabel("CPU time per epoch (ms)")
ax1.set_title("the pieces of an epoch, timed alone")
ax1.legend()
plt.show()

# %% [markdown]
# What the pieces show (read the CPU columns: other work on this shared machine inflates the wall times):
#
# - **Gradients** cost a little more CPU time on 8 devices than on 1 (1.2 times here): the same
#   arithmetic, cut into eight smaller matrix products. On two cores this work cannot go faster by being
#   split more ways.
# - **Adam** costs 5 times more on 8 devices: every device applies the whole update to its own copy of
#   the parameters (eight times the arithmetic, though the CPU time grows less than eightfold here). On
#   real devices these eight updates run at the same time on eight chips and cost one update's time; here
#   they queue for two cores.
# - **The all-reduce** is nearly free on one device (there is nothing to add up) and costs about a fifth
#   (18%) of the 8-device epoch's CPU time: each of the 31 steps copies and adds the 0.33 M gradient
#   values across eight buffers and makes the eight devices wait for each other.
# - The **whole epoch** costs more than these pieces together, on 8 devices by far (the untimed rest is
#   44% of its CPU time). What is left was not timed separately: on any device count the epoch's
#   binarization and the gathering of its batches; on 8
#   devices also the synchronization of the devices at every step, and the data shuffle. `fit` draws
#   each epoch's batches by a random permutation of the whole data set, whose rows are spread over the
#   devices, and the compiled program does that by sending **every device all of the epoch's batches**,
#   of which each then keeps its own rows. This part is not timed here but read off the compiled program:
#   `benchmarks/scaling.py` prints the collectives of `fit`'s compiled epoch (`benchmarks/README.md`), and
#   on 8 devices and 4,000 digits they are, besides the step's all-reduce, an all-gather of the batch
#   indices and an all-reduce of all the epoch's batches (`f32[31,128,784]`, to every device).
#
# So on simulated devices the sharded program pays for communication and replication and gains nothing,
# because all "devices" draw on the same two cores. On hardware where each device has its own compute
# units and memory, the gradient piece is divided by $n$ (each device does $1/n$ of the rows at the
# same time), the replicated Adam update costs one update's time, and what remains is the all-reduce over
# the interconnect. Data parallelism pays when the per-device compute of a step is large against that
# all-reduce: big models, big batches, images larger than $28 \times 28$. Exercise 3 estimates, on paper,
# what that balance would be for this 0.33 M-parameter MLP on a GPU node.

# %% [markdown]
# ## 7. A full-size data set: 60,000 images, a checkpoint on two devices, resumed on one
#
# The course's digits are 4,000 training images. The chapters download nothing when they run, and the
# machine this chapter was executed on had no internet, so full MNIST was out of reach; but the
# operating-system package `dataset-fashion-mnist` holds Fashion-MNIST (60,000 training and 10,000 test
# images of clothing, $28 \times 28$ grey levels), which `vae_lib.data.load_mnist("fashion_mnist")` reads
# offline after checking each file's content against pinned SHA-256 hashes. Where the package is not
# installed, the section is skipped with a message.
#
# The run shows the part of scaling that is not speed: a long run survives interruption. The first epoch
# trains data-parallel on a 2-device mesh and writes a checkpoint; the second `fit` call, **on one device
# and without a mesh**, resumes from that file. The checkpoint holds plain arrays, not shardings, and the
# run settings it records (model, optimizer, data fingerprint, key, ...) do not include the device count,
# because the result depends on it only through float32 rounding (Section 5). We use batches of 256 (234
# steps per epoch) and the
# same small MLP; a 2-device mesh rather than 8 keeps the chapter within its time budget (Section 6 showed
# what 8 simulated devices cost).

# %%
try:
    full = load_mnist("fashion_mnist")
except DownloadError as e:
    full = None
    print(f"Skipping Section 7: Fashion-MNIST is not available offline here ({e}).")
    print("On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist")
if full is not None:
    print(
        f"Fashion-MNIST: train {full.x_train.shape}, test {full.x_test.shape}, grey levels in [{full.x_train.min()}, {full.x_train.max()}]"
    )
    assert full.x_train.shape == (60000, 784) and full.x_test.shape == (10000, 784)

# %%
if full is not None:
    full_test = binarize(k_full_bin, full.x_test)  # (10000, 784) binary, fixed
    ckpt = Path(tempfile.mkdtemp()) / "fashion.ckpt.npz"
    common = dict(
        key=k_full_fit, batch_size=256, binarize=True, x_test=full_test, checkpoint_path=ckpt, progress=False
    )

    first = new_model()
    c0 = time.process_time()
    h1 = vae_lib.fit(first, full.x_train, epochs=1, mesh=data_mesh(2), **common)  # epoch 1 on 2 devices
    cpu1 = time.process_time() - c0
    print(
        f"epoch 1 on 2 devices: test ELBO {h1['test_elbo'][-1]:.2f} nats, {h1['seconds'][-1]:.1f} s wall "
        f"({cpu1:.1f} s CPU with compilation); checkpoint {ckpt.name}, {ckpt.stat().st_size / 1e6:.1f} MB"
    )

    second = new_model()  # a fresh model: everything it needs comes from the checkpoint
    c0 = time.process_time()
    h2 = vae_lib.fit(second, full.x_train, epochs=2, resume=True, **common)  # epoch 2 on 1 device
    cpu2 = time.process_time() - c0
    print(
        f"resumed on 1 device: history epochs {h2['epoch']}, test ELBO {[round(v, 2) for v in h2['test_elbo']]} nats, "
        f"epoch 2 {h2['seconds'][-1]:.1f} s wall ({cpu2:.1f} s CPU with compilation)"
    )
    _, meta = vae_lib.load_checkpoint(ckpt, (nnx.state(second), tx.init(nnx.state(second)), k_full_fit))
    print(f"the checkpoint now holds epoch {meta['epoch']}")
    assert h2["epoch"] == [1, 2] and h2["test_elbo"][0] == h1["test_elbo"][0]  # the stored history, continued
    assert h2["test_elbo"][1] > h2["test_elbo"][0] + 2.0  # the second epoch kept improving the model
    assert meta["epoch"] == 2

# %% [markdown]
# The second call found the checkpoint, checked that it belongs to the same run, restored the parameters,
# Adam's state, the key and the history, and trained epoch 2 only, on one device: the history has both
# epochs and the test ELBO improved from the first to the second, by ≈ 12 nats (values printed above). The
# device count is not among the settings a resume compares; this cell shows 2 devices → 1, and
# `tests/test_sharding.py` (`test_checkpoints_resume_across_device_counts`) checks resumes across device
# counts in both directions.
#
# Two epochs are a demonstration, not a trained model, and a Bernoulli likelihood on binarized clothing
# images is a modelling choice of convenience, as for the digits; the point here is the mechanics at full
# size.

# %% [markdown]
# ## 8. On a GPU node, and on several hosts
#
# **A GPU node.** Nothing in the training code changes. Delete the first cell's two settings: the
# `--xla_force_host_platform_device_count` flag (it only affects the CPU backend; `XLA_FLAGS` itself also
# carries flags for GPUs, so keep any others you need) and `JAX_PLATFORMS=cpu` (it would hide the GPUs).
# Install JAX's CUDA build (JAX's installation guide: `pip install -U "jax[cuda13]"`, or `"jax[cuda12]"`
# for a CUDA 12 driver), and `jax.devices()` lists the GPUs. `data_mesh()` takes all of them (or
# `data_mesh(4)` the first four):
#
# ```python
# mesh = vae_lib.sharding.data_mesh()          # e.g. Mesh('data': 8) over 8 GPUs
# history = vae_lib.fit(model, x_train, key=key, epochs=50, batch_size=1024, binarize=True, mesh=mesh)
# ```
#
# `batch_size` is the global batch; keep it a multiple of the device count, and large enough that each
# GPU has real work per step, or the all-reduce dominates (Exercise 3). `python benchmarks/scaling.py --examples 60000
# --batch-size 1024` measures the throughput on 1, 2, 4 and 8 GPUs there without any change (it sets
# the CPU flag, which a GPU machine ignores).
#
# **Several hosts.** Each machine runs one Python process (or one per GPU) with the same script. The
# script first calls `jax.distributed.initialize(...)`, which connects the processes through a
# coordinator (on a cluster managed by SLURM or on Cloud TPU the arguments are found automatically). From
# then on `jax.devices()` lists the devices of *all* processes, `data_mesh()` spans all hosts, and `fit`
# is called as before, except that each process passes **only its own rows** of the data: `fit` builds one
# global array from them (`jax.make_array_from_process_local_data`; the global data set is the
# concatenation of the processes' rows in process order). Parameters are replicated, so every process ends
# with the same model; process 0 writes the checkpoint. The next cell writes such a script for two
# processes on this machine (one CPU device each; CPU collectives between processes go through the `gloo`
# library) and prints the command that runs it. It is not run by default: two more Python processes, each
# importing JAX and compiling, took 16 s of CPU together when this chapter was written (74 s wall on the
# shared machine), which would add about a quarter to the chapter's CPU time. Set `RUN_TWO_PROCESSES = True`
# to run it
# here; it then checks that both processes end with the parameters of the one-process run (run by hand
# for this chapter: identical in both processes, $5.3 \times 10^{-8}$ relative to one process; the test
# suite, `tests/test_sharding.py`, makes the same check).

# %%
RUN_TWO_PROCESSES = False  # set True to run two processes here (about 16 s of CPU more, measured)

SCRIPT = '''\
"""fit over 2 processes on one machine (one CPU device each). Run: python two_process_fit.py ID PORT OUT"""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one CPU device per process
import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib.data import load_mnist5k  # noqa: E402
from vae_lib.sharding import data_mesh  # noqa: E402

x = load_mnist5k().x_train[:2048]
mine = np.array_split(x, jax.process_count())[jax.process_index()]  # this process's rows only
model = vae_lib.mlp_vae(784, 20, hidden=(200,), rngs=nnx.Rngs(0))
history = vae_lib.fit(model, mine, key=jax.random.key(1), epochs=3, binarize=True, progress=False, mesh=data_mesh())
params = np.concatenate([np.ravel(a) for a in jax.tree.leaves(nnx.state(model))])
np.save(f"{out}/params_{process_id}.npy", params)
print(f"process {process_id} of {jax.process_count()}: {jax.device_count()} devices in the mesh, {len(mine)} rows")
'''
workdir = Path(tempfile.mkdtemp())
script = workdir / "two_process_fit.py"
script.write_text(SCRIPT)
command = f"python {script} 0 12355 {workdir} & python {script} 1 12355 {workdir}; wait"
print(f"wrote {script}; run both processes (from the repository's virtual environment) with:\n  {command}")

if RUN_TWO_PROCESSES:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i), "12355", str(workdir)], env=env)
        for i in (0, 1)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    reference = vae_lib.mlp_vae(784, 20, hidden=(200,), rngs=nnx.Rngs(0))  # as in the script
    vae_lib.fit(reference, x_train[:2048], key=jax.random.key(1), epochs=3, binarize=True, progress=False)
    ref = np.concatenate([np.ravel(a) for a in jax.tree.leaves(nnx.state(reference))])
    got = [np.load(workdir / f"params_{i}.npy") for i in (0, 1)]
    print(
        f"relative difference to the 1-process run: {[float(np.linalg.norm(g - ref) / np.linalg.norm(ref)) for g in got]}"
    )
    assert np.array_equal(got[0], got[1]) and np.linalg.norm(got[0] - ref) < 1e-5 * np.linalg.norm(ref)

# %% [markdown]
# On real hosts the only changes are the coordinator's address (`"10.0.0.1:1234"`, a machine every process
# can reach), `num_processes`, each process's own `process_id`, no `XLA_FLAGS` line, and (on GPUs) no
# `gloo` line: XLA then uses NCCL between GPUs. Each process reads its own part of the data (its files, or
# its slice of a shared data set) rather than loading everything from disk.
#
# That saves the loading, **not the device memory**, because of `fit`'s global shuffle (Section 6): every
# epoch, the compiled program sends every device all of the epoch's batches (an all-reduce, or for small data
# sets an all-gather, of the whole data set), and each device keeps its rows. So with `fit` as it is, each
# device holds the whole
# data set during an epoch and the network carries it to every process once per epoch. For MNIST-sized
# data (60,000 × 784 floats are 188 MB) that is affordable; a data set larger than one device's memory
# needs a per-process input pipeline instead, which moves no data but gives results that depend on the
# layout (Exercise 4). What the global shuffle buys is the result of Section 5: the same parameters
# whatever the number of devices and processes.

# %% [markdown]
# ## Summary
#
# - A **mesh** names a grid of devices; a **partition spec** says which array axis is split over which mesh
#   axis; the pair is a **named sharding**. `jax.device_put` places arrays, and every `jax.Array` carries
#   its sharding (`addressable_shards` lists the pieces).
# - `jax.jit` on sharded inputs compiles one program for all devices and inserts the communication: none
#   for element-wise work or work within a shard, an **all-reduce** for a sum across shards. The compiled
#   program's text shows them (`.lower(...).compile().as_text()`).
# - **Data parallelism** is the ordinary train step with the batch's rows sharded and the parameters
#   replicated: one all-reduce per step, into which XLA combined all twelve arrays (ten gradients and two
#   batch sums of the loss) of our VAE.
# - `vae_lib.fit(..., mesh=data_mesh())` does that in its compiled epoch. On 1, 2, 4 and 8 devices it gave
#   the same parameters after 3 epochs to a relative $6$ to $7 \times 10^{-8}$ (float32 rounding);
#   evaluation shards the
#   same way with the same result.
# - Eight simulated devices on two cores are **slower** than one: the same arithmetic on the same two
#   cores, plus eight replicated Adam updates and an all-reduce per step (both timed), and a shuffle that
#   sends every device the whole epoch's batches (read off the compiled program, not timed). On real
#   devices the gradient work divides by $n$ and what remains is the all-reduce.
# - A checkpoint written by a 2-device run on 60,000 Fashion-MNIST images resumed on one device; a GPU
#   node needs no code change, and several hosts need `jax.distributed.initialize` and each process's own
#   rows.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: a two-axis mesh and a matrix product
#
# On the $4 \times 2$ mesh `mesh2d` of Section 2 (axes `"data"` and `"model"`), place a $(8, 6)$ matrix
# `a` with `P("data", "model")` and a $(6, 3)$ matrix `w` with `P("model", None)` (its rows split like
# `a`'s columns). Before running anything, predict: the shape of each device's piece of `a`, and which
# collective XLA needs to compute `a @ w`, over which mesh axis. Then check both: the shards' shapes, the
# collectives in the compiled `jax.jit(lambda a, w: a @ w)`, and the product against NumPy.

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
# Solution to exercise 1: try it yourself first, then run this cell.
ka, kw = jax.random.split(k_exercise)
a = jax.device_put(jax.random.normal(ka, (8, 6)), NamedSharding(mesh2d, P("data", "model")))
w = jax.device_put(jax.random.normal(kw, (6, 3)), NamedSharding(mesh2d, P("model", None)))
product = jax.jit(lambda a, w: a @ w)
text = product.lower(a, w).compile().as_text()
found = collectives(text)
print("a's pieces:", {s.data.shape for s in a.addressable_shards}, "| collectives:", dict(found))
print(next(line.strip()[:160] for line in text.splitlines() if " all-reduce(" in line))
# Each device holds 8/4 = 2 rows and 6/2 = 3 columns of a, and the matching 3 rows of w, so it can form a
# partial product over its 3 of the 6 summed indices: the two partial products along "model" must be
# added, an all-reduce over the "model" axis (groups of 2 devices), not over all eight.
assert {s.data.shape for s in a.addressable_shards} == {(2, 3)}
assert found == collections.Counter({"all-reduce": 1})
assert "replica_groups={{0,1},{2,3},{4,5},{6,7}}" in text  # pairs of devices along "model"
np.testing.assert_allclose(product(a, w), np.asarray(a) @ np.asarray(w), rtol=1e-5, atol=1e-5)

# %% [markdown]
# ### Exercise 2: global batch or per-device batch?
#
# `fit`'s `batch_size` is the *global* batch: 128 on one device and on eight, 16 rows per device on eight.
# Many scripts instead fix the *per-device* batch (say 16) and let the global batch grow with the device
# count. What would that change in Section 5's comparison, and what do people do to the learning rate
# when the global batch grows?

# %% [markdown]
# <details><summary>Solution</summary>
#
# With a fixed per-device batch of 16, one device takes batches of 16 and eight devices batches of 128:
# different optimizations (eight times fewer steps per epoch on eight devices, each with a less noisy
# gradient), so the parameters after 3 epochs would differ by far more than rounding and Section 5 could not
# compare them. A fixed global batch keeps the optimization the same and only moves the work. When the
# global batch does grow (to use more devices well), the usual rule is to scale the learning rate with it
# (the "linear scaling rule", with a warm-up over the first steps: Goyal et al., 2017), which holds up to a
# batch size that depends on the problem; for Adam a square-root rule (the learning rate grows with the
# square root of the batch ratio) is the analogue (Malladi et al., 2022). Either way it is a change of the training recipe, to be validated, not a free speed-up.
#
# </details>
#
# ### Exercise 3: what the all-reduce would cost on a GPU node
#
# A ring all-reduce (the bandwidth-optimal algorithm used by NCCL for large arrays) makes each of $n$
# devices send and receive $2\frac{n-1}{n}$ times the array's size. For our model's parameters (printed in
# Section 4) in float32 on 8 GPUs linked at about 300 GB/s per direction, estimate the bandwidth time of
# one step's all-reduce. Each collective also has a fixed latency of the order of 10 microseconds. Compare
# with the compute of a step of this MLP at batch 128 (about $6 \times 128 \times 0.33\text{ M}$ floating-point
# operations) on a GPU that does $10^{14}$ per second. What does that say about data parallelism for this
# model?

# %% [markdown]
# <details><summary>Solution</summary>
#
# The parameters are 326,824 floats, 1.31 MB. Each device moves $2 \cdot \tfrac{7}{8} \cdot 1.31 \approx
# 2.3$ MB, which at 300 GB/s takes about 8 microseconds; with the latency, a step's all-reduce costs of
# the order of 10-20 microseconds. The step's compute is $6 \cdot 128 \cdot 3.3 \times 10^5 \approx 2.5
# \times 10^8$ operations, 2.5 microseconds at $10^{14}$ per second even on *one* GPU (in practice a small
# step is bound by kernel launch overheads of tens of microseconds, not by arithmetic). Splitting that over
# 8 GPUs saves at most a few microseconds and adds 10-20 microseconds of communication: for this model and
# batch, 8 GPUs would be slower than one, just as 8 simulated devices were. Data parallelism pays when the
# per-device compute per step is much larger than the all-reduce: larger models (the compute grows with
# batch $\times$ parameters, the all-reduce only with parameters), larger images, larger per-device batches.
# These are order-of-magnitude estimates, not measurements.
#
# </details>
#
# ### Exercise 4: the cost of a global shuffle
#
# `fit` shuffles the whole data set every epoch, even though its rows are spread over the devices (and, on
# several hosts, over machines). Describe an alternative that moves no data between devices, and say what
# it would cost in terms of Section 5's result.

# %% [markdown]
# <details><summary>Solution</summary>
#
# Each device (or process) could shuffle only its own rows and draw its $B/n$ rows of every batch from
# them: no data moves, only the gradients' all-reduce remains. The batches are then different from the
# one-device run's (a batch always holds exactly $B/n$ rows from each device's part of the data), so the
# parameters after 3 epochs would depend on the number of devices and differ by much more than rounding.
# Statistically it is a fine training scheme (it is what most multi-host input pipelines do, with the
# data set pre-shuffled across files), but it gives up the exact device-count independence that
# Section 5 checked. With `fit`'s global shuffle every device receives the whole epoch's batches
# (Section 6): on one host that is a copy of the data set per device and epoch; across hosts it is network
# traffic of the whole data set to every process per epoch, and a full copy in every device's memory,
# which for large data sets decides the matter.
#
# </details>
#
# ## References
#
# - JAX documentation: *Introduction to parallel programming* (sharded computation, `shard_map`),
#   <https://docs.jax.dev/en/latest/sharded-computation.html>; *Distributed arrays and automatic
#   parallelization*, <https://docs.jax.dev/en/latest/notebooks/Distributed_arrays_and_automatic_parallelization.html>;
#   *Introduction to multi-controller JAX (aka multi-process/multi-host JAX)*,
#   <https://docs.jax.dev/en/latest/multi_process.html>.
# - P. Lippe. *Part 2.1: Introduction to Distributed Computing in JAX* and *Part 2.2: (Fully-Sharded) Data
#   Parallelism.* UvA Deep Learning Tutorials, 2024.
#   <https://uvadlc-notebooks.readthedocs.io/en/latest/tutorial_notebooks/scaling/JAX/data_parallel_intro.html>
#   (the eight simulated CPU devices of this chapter come from there).
# - N. Shazeer, Y. Cheng, N. Parmar, D. Tran, A. Vaswani, P. Koanantakool, P. Hawkins, H. Lee, M. Hong,
#   C. Young, R. Sepassi and B. Hechtman. *Mesh-TensorFlow: Deep Learning for Supercomputers.* NeurIPS
#   2018. arXiv:1811.02084 (named mesh axes and layouts).
# - OpenXLA. *Shardy*, <https://openxla.org/shardy> (the sharding propagation JAX uses in place of
#   GSPMD's).
# - Y. Xu, H. Lee, D. Chen, B. Hechtman, Y. Huang, R. Joshi, M. Krikun, D. Lepikhin, A. Ly, M. Maggioni,
#   R. Pang, N. Shazeer, S. Wang, T. Wang, Y. Wu and Z. Chen. *GSPMD: General and Scalable Parallelization
#   for ML Computation Graphs.* arXiv:2105.04663, 2021 (the partitioner behind `jax.jit` on sharded arrays).
# - P. Goyal, P. Dollár, R. Girshick, P. Noordhuis, L. Wesolowski, A. Kyrola, A. Tulloch, Y. Jia and
#   K. He. *Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour.* arXiv:1706.02677, 2017 (the
#   linear scaling rule).
# - S. Malladi, K. Lyu, A. Panigrahi and S. Arora. *On the SDEs and Scaling Rules for Adaptive Gradient
#   Algorithms.* NeurIPS 2022. arXiv:2205.10287 (the square-root scaling rule for Adam).
# - P. Patarasuk and X. Yuan. *Bandwidth Optimal All-reduce Algorithms for Clusters of Workstations.*
#   Journal of Parallel and Distributed Computing 69(2), 2009 (the ring all-reduce).
# - S. Rajbhandari, J. Rasley, O. Ruwase and Y. He. *ZeRO: Memory Optimizations Toward Training Trillion
#   Parameter Models.* SC 2020. arXiv:1910.02054 (sharding the optimizer state and parameters instead of
#   replicating them, which `vae_lib` does not need for models of this size).
# - H. Xiao, K. Rasul and R. Vollgraf. *Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
#   Learning Algorithms.* arXiv:1708.07747, 2017.

# %%
import flax  # noqa: E402

print(
    f"chapter ran in {time.perf_counter() - T_START:.0f} s wall, {time.process_time() - CPU_START:.0f} s CPU "
    f"(load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPU cores, no GPU)"
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
