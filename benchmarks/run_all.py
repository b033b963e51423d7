"""Run every benchmark in turn, each in its own Python process (``make bench``).

Usage: python benchmarks/run_all.py [--skip-notebooks]

Prints each script's figures as it goes; see benchmarks/README.md for what they measure and the goals.
For figures worth quoting, run it on a quiet machine: the scripts report the load average they saw.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["mlp_throughput.py", "conv_throughput.py", "eval_speed.py", "scaling.py", "notebook_times.py"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-notebooks", action="store_true", help="do not execute the chapters")
    args = parser.parse_args()
    failed = []
    for script in SCRIPTS:
        if args.skip_notebooks and script == "notebook_times.py":
            continue
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(HERE / script)], cwd=HERE.parent).returncode
        print(f"   [{script}: {time.perf_counter() - t0:.0f} s, exit status {rc}]\n", flush=True)
        if rc:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
