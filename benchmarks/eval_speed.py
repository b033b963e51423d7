"""Speed of the importance-sampled log-likelihood: k = 1,000 samples on the 1,000 test digits (MLP VAE).

Usage: python benchmarks/eval_speed.py [--repeats 3] [--epochs 3]

Trains the MLP VAE 784-500-20 briefly (the cost does not depend on the weights; trained weights make the
printed estimate meaningful), then times ``vae_lib.importance_log_likelihood(key, model, x_test,
num_samples=1000)``: the first call (compilation included) and the median of later calls. That is
10^6 decoder passes (1,000 digits x 1,000 latents), about 0.8 TFLOP. Goal (issue 4): <= 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib.data import binarize, load_mnist5k  # noqa: E402

K = 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs before the evaluation")
    args = parser.parse_args()
    _common.header(f"importance-sampled log p(x), k = {K:,}, 1,000 test digits, MLP VAE 784-500-20")

    data = load_mnist5k()
    x_test = binarize(jax.random.key(123), data.x_test)
    model = vae_lib.mlp_vae(784, 20, rngs=nnx.Rngs(0))
    vae_lib.fit(model, data.x_train, key=jax.random.key(1), epochs=args.epochs, binarize=True, progress=False)

    def run(seed):
        t0, c0 = time.perf_counter(), time.process_time()
        ll = vae_lib.importance_log_likelihood(jax.random.key(seed), model, x_test, num_samples=K)
        ll.block_until_ready()
        return time.perf_counter() - t0, time.process_time() - c0, ll

    first, first_cpu, ll = run(0)
    later = [run(i + 1) for i in range(args.repeats)]
    wall = [t for t, _, _ in later]
    cpu = [c for _, c, _ in later]
    print(f"   first call (with compilation)   {first:6.2f} s  (CPU {first_cpu:.1f} s)")
    print(
        f"   later calls                     {statistics.median(wall):6.2f} s median of {len(wall)}, "
        f"best {min(wall):.2f} s  (CPU {statistics.median(cpu):.1f} s)   [goal <= 30 s]"
    )
    print(
        f"   {1e6 / statistics.median(wall):,.0f} decoder passes/s; mean log p(x) = "
        f"{float(np.mean(np.asarray(ll))):.2f} nats after {args.epochs} epochs"
    )
    print(f"   ({_common.load()} at end)")


if __name__ == "__main__":
    main()
