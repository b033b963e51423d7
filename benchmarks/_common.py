"""Shared helpers of the benchmark scripts: interleaved timing, medians, and a description of the machine.

Timings on a shared machine are noisy, so every script times its alternatives in the same process,
interleaved round by round (A, B, C, A, B, C, ...), and reports the median over rounds (and the best
round, the figure a quiet machine would approach). Everything timed has been compiled first.

Each call's CPU time (all threads of this process) is recorded too. When other processes compete for
the cores, wall time grows but CPU time barely does, so ratios of CPU times compare alternatives fairly
on a busy machine; on a quiet one, wall time is the figure that matters.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable


class Times(dict):
    """``name -> wall seconds per call``, with ``.cpu[name]`` the CPU seconds of the same calls."""

    def __init__(self, names):
        super().__init__({name: [] for name in names})
        self.cpu: dict[str, list[float]] = {name: [] for name in names}


def interleave(fns: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 1) -> Times:
    """Call each function ``warmup`` times, then ``rounds`` times in turn; record wall and CPU seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = Times(fns)
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            times.cpu[name].append(time.process_time() - c0)
    return times


def rate(seconds: list[float], items: float) -> tuple[float, float]:
    """(median, best) items per second."""
    return items / statistics.median(seconds), items / min(seconds)


def load() -> str:
    """The 1-minute load average against the number of cores, e.g. ``"load 3.1 on 2 cores"``."""
    try:
        one = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return "load unknown"
    return f"load {one:.1f} on {os.cpu_count()} cores"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str) -> None:
    """Print what was measured where: the script, the CPU, versions, and how busy the machine is."""
    import flax
    import jax
    import optax

    print(f"== {title}")
    print(
        f"   {cpu_name()}, {os.cpu_count()} cores, {jax.devices()[0].platform.upper()} backend; "
        f"python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}; {load()} at start"
    )


def row(
    name: str,
    seconds: list[float],
    items: float,
    *,
    cpu: list[float] | None = None,
    unit: str = "samples/s",
    extra: str = "",
) -> None:
    """One line: median and best rate, and the median CPU seconds per call if given."""
    med, best = rate(seconds, items)
    cpu_text = f"; CPU {1e3 * statistics.median(cpu):,.0f} ms/call" if cpu else ""
    print(
        f"   {name:<46s} {med:>10,.0f} {unit} (median of {len(seconds)}; best {best:,.0f}{cpu_text}){extra}"
    )


def ratio(label: str, times: Times, a: str, b: str, *, goal: str = "") -> None:
    """Speed of ``a`` relative to ``b`` (b's time / a's time): by median and best wall time, and CPU time."""
    med = statistics.median(times[b]) / statistics.median(times[a])
    best = min(times[b]) / min(times[a])
    cpu = statistics.median(times.cpu[b]) / statistics.median(times.cpu[a])
    goal = f"   [goal {goal}]" if goal else ""
    print(f"   {label}: {med:.2f} by median wall time, {best:.2f} by best, {cpu:.2f} by CPU time{goal}")


def epoch_config(model, *, batch_size: int, optimizer, mesh=None):
    """The static configuration of ``fit``'s compiled epoch that the benchmarks time: the ELBO (beta = 1,
    analytic KL, one sample) with dynamic binarization, on ``mesh`` (``None``: one device)."""
    from flax import nnx

    from vae_lib import training

    return training._Config(
        graphdef=nnx.graphdef(model),
        optimizer=optimizer,
        likelihood=model.likelihood,
        objective="elbo",
        num_samples=1,
        analytic_kl=True,
        binarize=True,
        batch_size=batch_size,
        beta_schedule=None,
        mesh=mesh,
    )


def library_epoch(model, x, *, batch_size: int, learning_rate: float, key_of_epoch=None, bernoulli=None):
    """``fit``'s own compiled epoch (dynamic binarization, Adam), called as ``fit`` calls it.

    Returns a callable that runs one more epoch each time it is called and waits for its result (it has
    run once, compiling, when this returns). ``key_of_epoch(e)`` gives epoch ``e``'s key (default:
    ``fold_in(key(1), e)``, as ``fit`` does). ``bernoulli``, if given, replaces the library's
    binarization draw (e.g. ``jax.random.bernoulli``, to measure what the fused one saves).
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from vae_lib import training

    params = nnx.state(model)
    optimizer = training._adam(learning_rate) if bernoulli is None else optax.adam(learning_rate)
    config = epoch_config(model, batch_size=batch_size, optimizer=optimizer)
    if key_of_epoch is None:
        key_of_epoch = lambda e: jax.random.fold_in(jax.random.key(1), e)  # noqa: E731
    num_batches = x.shape[0] // batch_size
    state = {"p": (params, config.optimizer.init(params)), "e": 0}

    def go():
        params, opt_state = state["p"]
        first_step = jnp.int32(state["e"] * num_batches)
        params, opt_state, losses, _, _ = training._train_epoch(
            config,
            params,
            opt_state,
            key_of_epoch(state["e"]),
            first_step,
            (x, None),
            (jnp.float32(1.0), None),
        )
        losses.block_until_ready()
        state["p"], state["e"] = (params, opt_state), state["e"] + 1

    library_bernoulli = training.bernoulli
    training.bernoulli = bernoulli or library_bernoulli  # read when the epoch is traced, in this first call
    try:
        go()
    finally:
        training.bernoulli = library_bernoulli
    return go
