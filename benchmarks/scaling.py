"""Data-parallel training throughput of ``vae_lib.fit(..., mesh=)`` against the number of devices.

Usage: python benchmarks/scaling.py [--devices 1,2,4,8] [--rounds 5] [--hidden 500] [--batch-size 128]
                                    [--examples 4000]

For each device count ``n``, the same MLP VAE (784-H-20, ReLU, Bernoulli decoder, dynamic binarization,
Adam 1e-3, global batch ``--batch-size``) trains on the same data with ``fit``'s compiled epoch on the mesh
``vae_lib.sharding.data_mesh(n)``: each batch is split over the ``n`` devices, the parameters and the
optimizer state are replicated, and XLA adds one all-reduce of the gradients per step. The epoch is called
as ``fit`` calls it (its arrays placed on the mesh first), compiled before the clock starts, and the device
counts are timed interleaved, round by round (``benchmarks/_common.py``). The table gives the median
throughput (examples/s), the CPU seconds per epoch (all threads of this process), the speed-up against
one device and the efficiency ``throughput_n / (n * throughput_1)`` (1 = perfect scaling). The plain
one-device epoch (``mesh=None``, what ``fit`` runs without a mesh) is printed for reference.

Devices: on a machine with GPUs (or TPUs), ``jax.devices()`` are the accelerators and the counts above the
number present are skipped. On a CPU-only machine the script simulates ``max(--devices)`` CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``, set below **before jax is imported** (XLA reads
its flags once, when it creates the CPU backend). Simulated devices share the machine's cores, so this
measures the cost of the sharded program (the per-step all-reduce, the replicated optimizer update,
smaller matrix products per device), not a speed-up: see Chapter 10 and benchmarks/README.md.

``--examples`` above the 4,000 bundled digits uses full Fashion-MNIST (``load_mnist("fashion_mnist")``,
offline from the OS package ``dataset-fashion-mnist``), e.g. ``--examples 60000 --batch-size 1024`` on a
GPU node.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per device count")
    parser.add_argument("--hidden", type=int, default=500, help="hidden units of the MLP (default 500)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    parser.add_argument("--examples", type=int, default=4000, help="training examples (default 4000)")
    args = parser.parse_args(argv)
    try:
        args.devices = sorted({int(d) for d in args.devices.split(",") if d.strip()})
    except ValueError:
        parser.error(f"--devices must be comma-separated integers, got {args.devices!r}")
    if not args.devices or args.devices[0] < 1:
        parser.error("--devices must list positive integers")
    for d in args.devices:
        if args.batch_size % d:
            parser.error(f"--batch-size ({args.batch_size}) must be a multiple of every device count ({d})")
    return args


def simulate_cpu_devices(n: int) -> None:
    """Ask XLA for ``n`` CPU devices; must run before jax is imported (a no-op for GPUs and TPUs)."""
    if "jax" in sys.modules:
        raise RuntimeError("simulate_cpu_devices must be called before jax is imported")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def compiled_epoch(model, x_np, *, mesh, batch_size: int, learning_rate: float = 1e-3):
    """``fit``'s compiled epoch on ``mesh`` (or one device for ``None``), as ``fit`` calls it.

    Returns a callable that runs one more epoch and waits for it; it has run once (compiling) on return.
    Its ``hlo()`` gives the compiled epoch's text (compiled again, ahead of time).
    """
    import _common
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vae_lib import sharding, training

    params = nnx.state(model)
    config = _common.epoch_config(
        model, batch_size=batch_size, optimizer=training._adam(learning_rate), mesh=mesh
    )
    opt_state = config.optimizer.init(params)
    x, beta = jnp.asarray(x_np), jnp.float32(1.0)
    if mesh is not None:  # what fit's _place_on_mesh does
        params, opt_state, beta = sharding.replicate(mesh, (params, opt_state, beta))
        x = sharding.shard_rows(mesh, x_np)
    num_batches = x_np.shape[0] // batch_size
    state = {"p": (params, opt_state), "e": 0}

    def go():
        params, opt_state = state["p"]
        key = jax.random.fold_in(jax.random.key(1), state["e"])
        first_step = jnp.int32(state["e"] * num_batches)
        if mesh is not None:
            key, first_step = sharding.replicate(mesh, (key, first_step))
        params, opt_state, losses, _, _ = training._train_epoch(
            config, params, opt_state, key, first_step, (x, None), (beta, None)
        )
        losses.block_until_ready()
        state["p"], state["e"] = (params, opt_state), state["e"] + 1

    def hlo() -> str:
        params, opt_state = state["p"]
        key, first_step = jax.random.key(1), jnp.int32(0)
        if mesh is not None:
            key, first_step = sharding.replicate(mesh, (key, first_step))
        args = (config, params, opt_state, key, first_step, (x, None), (beta, None))
        return training._train_epoch.lower(*args).compile().as_text()

    go()
    go.hlo = hlo
    return go


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(hlo_text: str) -> list[str]:
    """One line per collective of a compiled program: its kind and the shapes it returns."""
    found = []
    for line in hlo_text.splitlines():
        m = re.search(r"= (.*?) (" + "|".join(COLLECTIVES) + r")(?:-start)?\(", line)
        if m:
            shapes = re.findall(r"[a-z]+\d*\[[\d,]*\]", m.group(1))
            found.append(f"{m.group(2)} of {len(shapes)} array(s): {' '.join(shapes)}")
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    simulate_cpu_devices(max(args.devices))  # before `import jax`, here and in every module below

    import jax
    from flax import nnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common

    import vae_lib
    from vae_lib.data import load_mnist, load_mnist5k
    from vae_lib.sharding import data_mesh

    platform = jax.devices()[0].platform
    _common.header(
        f"Data-parallel throughput, MLP VAE 784-{args.hidden}-20, global batch {args.batch_size}, "
        f"{args.examples:,} examples, on {jax.device_count()} {platform.upper()} devices"
        + (" (simulated; they share the cores)" if platform == "cpu" else "")
    )
    counts = [n for n in args.devices if n <= jax.device_count()]
    skipped = [n for n in args.devices if n > jax.device_count()]
    if skipped:
        print(f"   skipped device counts {skipped}: only {jax.device_count()} devices")
    if args.examples <= 4000:
        x_np = load_mnist5k().x_train[: args.examples]
    else:
        x_np = load_mnist("fashion_mnist").x_train[: args.examples]
    for n in counts:  # a mesh needs a number of rows that each process's devices divide
        x_np = x_np[: x_np.shape[0] - x_np.shape[0] % n]
    examples = (x_np.shape[0] // args.batch_size) * args.batch_size  # the last partial batch is dropped

    def model():
        return vae_lib.mlp_vae(784, 20, hidden=(args.hidden,), rngs=nnx.Rngs(0))

    fns = {"no mesh": compiled_epoch(model(), x_np, mesh=None, batch_size=args.batch_size)}
    for n in counts:
        fns[n] = compiled_epoch(model(), x_np, mesh=data_mesh(n), batch_size=args.batch_size)
    times = _common.interleave(fns, rounds=args.rounds, warmup=0)  # each has run once already

    rate = {name: examples / statistics.median(secs) for name, secs in times.items()}
    base = rate.get(1)
    columns = ("devices", 8), ("examples/s", 11), ("best", 9), ("CPU s/epoch", 12)
    columns += ("speed-up", 9), ("efficiency", 11)
    print("   " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for name, secs in times.items():
        cpu = statistics.median(times.cpu[name])
        best = examples / min(secs)
        if name == "no mesh" or base is None:
            tail = f"{'':>9s} {'':>11s}"
        else:
            tail = f"{rate[name] / base:>9.2f} {rate[name] / (name * base):>11.2f}"
        print(f"   {name!s:>8s} {rate[name]:>11,.0f} {best:>9,.0f} {cpu:>12.3f} {tail}")
    print(f"   (medians of {args.rounds} interleaved epochs; efficiency = throughput_n / (n * throughput_1))")
    if counts and counts[-1] > 1:
        print(f"   collectives in fit's compiled epoch on {counts[-1]} devices:")
        for line in collectives(fns[counts[-1]].hlo()):
            print(f"     {line}")
    print(f"   ({_common.load()} at end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
