"""The Burda et al. (2016) reproduction script, in its ``--quick`` configuration (tiny data, seconds).

Checks what the full run relies on: the paper's learning-rate schedule, the architecture, that a run
stopped after some passes resumes from its checkpoint instead of starting again, and that the evaluation
reports a log-likelihood estimate above the ELBO and active units between 0 and 50.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "reproduce_iwae_table.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_iwae_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_papers_schedule(script):
    """lr = 1e-3 * 10^(-i/7) for 3^i passes, i = 0..7: 3,280 passes."""
    assert script.FULL_PASSES == 3280
    steps = 10  # steps per pass
    lr = script.burda_learning_rate(steps)
    start = 0
    for i in range(8):
        end = start + 3**i  # stage i covers passes [start, end)
        for p in (start, end - 1):
            np.testing.assert_allclose(float(lr(p * steps)), 1e-3 * 10 ** (-i / 7), rtol=1e-5)
        start = end
    np.testing.assert_allclose(float(lr(10**9)), 1e-3 * 10 ** (-7 / 7), rtol=1e-5)  # stays at the last


def test_the_papers_architecture(script):
    model = script.burda_model(jax.random.key(0))
    assert model.latent_dim == 50
    kernels = [p.shape for p in jax.tree.leaves(model) if getattr(p, "ndim", 0) == 2]
    expected = [(784, 200), (200, 200), (200, 50), (200, 50), (50, 200), (200, 200), (200, 784)]
    assert sorted(kernels) == sorted(expected)  # encoder 784-200-200-(50, 50), decoder 50-200-200-784
    assert model.likelihood == "bernoulli"


def test_quick_run_trains_evaluates_and_resumes(script, tmp_path, capsys):
    out = tmp_path / "run"
    first = script.main(["--quick", "--models", "vae", "iwae5", "--passes", "1", "--out", str(out)])
    for name in ("vae", "iwae5"):
        r = first[name]
        assert r["passes"] == 1 and r["eval_k"] == 50 and r["eval_examples"] == 40
        assert math.isfinite(r["test_log_px"]) and r["test_log_px"] < 0
        assert r["test_log_px"] > r["test_elbo"]  # IWAE_50 above the ELBO (by several nats here)
        assert 0 <= r["active_units"] <= 50
        assert (out / f"{name}.ckpt.npz").exists()
    assert script.passes_done(out / "vae.ckpt.npz") == 1
    # the paired comparison, re-derived from the per-example values the script saved
    with np.load(out / "vae.eval.npz") as vae, np.load(out / "iwae5.eval.npz") as iwae:
        np.testing.assert_allclose(vae["log_px"].mean(), first["vae"]["test_log_px"], rtol=1e-6)
        d = iwae["log_px"] - vae["log_px"]
    assert "log_px_minus_vae" not in first["vae"]
    np.testing.assert_allclose(first["iwae5"]["log_px_minus_vae"], d.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        first["iwae5"]["log_px_minus_vae_se"], d.std(ddof=1) / math.sqrt(40), rtol=1e-6
    )
    # a second call goes on from the checkpoint: one more pass, not two from scratch
    second = script.main(["--quick", "--models", "vae", "--passes", "2", "--out", str(out)])
    assert second["vae"]["passes"] == 2 and script.passes_done(out / "vae.ckpt.npz") == 2
    log = json.loads((out / "vae.log.json").read_text())
    assert [piece["until_pass"] for piece in log["pieces"]] == [1, 2]
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == {"vae", "iwae5"} and saved["vae"]["passes"] == 2
    table = capsys.readouterr().out
    assert "| vae | mnist5k (40 test) | 2 |" in table
