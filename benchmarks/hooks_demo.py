"""The research hooks of ``fit`` on the bundled digits: a beta warm-up, free bits, IWAE, a conditional VAE.

Usage: python benchmarks/hooks_demo.py [--epochs 10] [--figure hooks_demo.png]

Not a speed benchmark: it shows the hooks at work and prints what they change, each run from the same key
and initialization (MLP 784-256-16 on the 4,000 MNIST-5k training digits, dynamic binarization, Adam 1e-3):

- ``beta=1`` (plain ELBO), ``beta=optax.linear_schedule(0, 1, warm-up steps)`` and ``free_bits=0.5``:
  test ELBO (always the true ELBO), KL, active units (Burda et al.) and the ELBO-surgery split of the KL
  (``vae_lib.diagnostics``) after the same number of epochs;
- ``objective="iwae", num_samples=5`` against the ELBO run: ``log p(x)`` estimated with k = 500;
- a conditional VAE (``mlp_vae(..., num_classes=10)``, 2-D latent) asked for each digit: the share of its
  samples whose nearest class mean of the training digits is the digit asked for.

Tests of the same hooks: tests/test_training.py (test_beta_schedule_is_evaluated_at_every_step_inside_the_
compiled_epoch, test_free_bits_change_the_objective_only, test_iwae_objective_trains_on_the_importance_
weighted_bound, test_iwae_training_raises_the_bound_more_than_elbo_training), tests/test_conditional.py,
tests/test_diagnostics.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import vae_lib  # noqa: E402
from vae_lib import diagnostics  # noqa: E402
from vae_lib.data import binarize, load_mnist5k  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--figure", type=str, default="", help="save the conditional samples to this PNG")
    args = parser.parse_args()
    _common.header("fit's hooks on MNIST-5k: beta warm-up, free bits, IWAE, conditional VAE")
    data = load_mnist5k()
    x_test = binarize(jax.random.key(123), data.x_test)
    steps = args.epochs * (data.x_train.shape[0] // 128)
    runs = {
        "ELBO (beta = 1)": {},
        f"beta warm-up 0 -> 1 over {steps // 2} steps": {"beta": optax.linear_schedule(0.0, 1.0, steps // 2)},
        "free bits 0.5 nats per dimension": {"free_bits": 0.5},
        "IWAE, k = 5": {"objective": "iwae", "num_samples": 5},
    }
    models = {}
    print(f"   {'run':<40}{'test ELBO':>10}{'KL':>7}{'active':>7}{'I(x;z)':>8}{'KL(q(z)||p)':>12}{'s':>6}")
    for name, kw in runs.items():
        model = vae_lib.mlp_vae(784, 16, hidden=(256,), rngs=nnx.Rngs(0))
        t0 = time.perf_counter()
        vae_lib.fit(
            model,
            data.x_train,
            key=jax.random.key(1),
            epochs=args.epochs,
            binarize=True,
            progress=False,
            **kw,
        )
        seconds = time.perf_counter() - t0
        terms = vae_lib.evaluate_elbo(jax.random.key(2), model, x_test, num_samples=10)
        mean, logvar = diagnostics.encode_dataset(model, x_test)
        active, _ = diagnostics.active_units(mean)
        surgery = diagnostics.elbo_surgery(jax.random.key(3), mean, logvar)
        print(
            f"   {name:<40}{float(terms.elbo):>10.1f}{float(terms.kl):>7.1f}{active:>7d}"
            f"{float(surgery.mutual_information):>8.2f}{float(surgery.marginal_kl):>12.2f}{seconds:>6.0f}"
        )
        models[name] = model
    print("   log p(x) by importance sampling (k = 500), mean over the 1,000 test digits, paired difference:")
    ll = {
        name: np.asarray(
            vae_lib.importance_log_likelihood(jax.random.key(4), models[name], x_test, num_samples=500)
        )
        for name in ("ELBO (beta = 1)", "IWAE, k = 5")
    }
    diff = ll["IWAE, k = 5"] - ll["ELBO (beta = 1)"]
    print(
        f"   ELBO-trained {ll['ELBO (beta = 1)'].mean():.2f}, IWAE-trained {ll['IWAE, k = 5'].mean():.2f}, "
        f"IWAE - ELBO {diff.mean():+.2f} +- {diff.std(ddof=1) / np.sqrt(diff.size):.2f} nats"
    )

    x_bin = binarize(jax.random.key(5), data.x_train)
    cvae = vae_lib.mlp_vae(784, 2, hidden=(256,), num_classes=10, rngs=nnx.Rngs(0))
    vae_lib.fit(cvae, x_bin, y_train=data.y_train, key=jax.random.key(6), epochs=args.epochs, progress=False)
    asked = np.repeat(np.arange(10), 50)
    samples = np.asarray(cvae.sample(jax.random.key(7), asked.size, y=asked))
    centres = np.stack([data.x_train[data.y_train == c].mean(0) for c in range(10)])
    nearest = np.argmin(((samples[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    real = np.argmin(((data.x_test[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    print(
        f"   conditional VAE (2-D latent): {np.mean(nearest == asked):.0%} of its samples are nearest the "
        f"class mean of the digit asked for (real digits: {np.mean(real == data.y_test):.0%}; chance 10%)"
    )
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from vae_lib.plotting import image_grid

        fig, ax = plt.subplots(figsize=(8, 8))
        image_grid(
            samples.reshape(10, 50, 784)[:, :10].reshape(100, 784),
            ncols=10,
            ax=ax,
            title="Conditional VAE: row c is asked for digit c",
        )
        fig.savefig(args.figure, dpi=80, bbox_inches="tight")
        print(f"   saved {args.figure}")
    print(f"   ({_common.load()} at end)")


if __name__ == "__main__":
    main()
