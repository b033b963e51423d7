"""Wall time and peak memory of every chapter, each executed top to bottom in a fresh kernel.

Usage: python benchmarks/notebook_times.py [notebooks/NN_topic.ipynb ...]

Each notebook (default: every ``notebooks/[0-9][0-9]_*.ipynb``) is executed by nbclient in a fresh
``python3`` kernel, as ``scripts/build_book.py`` executes it (the stored file is not changed), and timed
as build_book.py times it (kernel start-up included). The peak resident memory of the kernel process is
read at the end from ``VmHWM`` in ``/proc/self/status`` (Linux; elsewhere ``ru_maxrss``) by one extra
cell executed in the same kernel after the notebook's cells, on an in-memory copy. Goals: <= 60 s per
chapter (90 s hard limit) and <= 3 GB peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIME_GOAL_S, TIME_LIMIT_S, MEMORY_GOAL_GB = 60, 90, 3.0

PEAK_CELL = """\
import json, resource, sys
_peak = None
try:
    with open("/proc/self/status") as _f:
        _peak = next(int(l.split()[1]) * 1024 for l in _f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    _rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _peak = _rss if sys.platform == "darwin" else _rss * 1024
print("__PEAK_RSS_BYTES__" + json.dumps(_peak))
"""


def execute(path: Path) -> tuple[float, float | None]:
    """Execute ``path`` in a fresh kernel; return (wall seconds, peak RSS of the kernel in bytes)."""
    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    times: list[float] = []

    # Timed like build_book.py's execute(): kernel start-up included, up to the end of the last notebook cell.
    client.reset_execution_trackers()
    t0 = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            if index == n_cells - 1:
                times.append(time.perf_counter() - t0)
    peak = None
    for out in nb.cells[-1].get("outputs", []):
        text = out.get("text", "")
        if "__PEAK_RSS_BYTES__" in text:
            peak = json.loads(text.split("__PEAK_RSS_BYTES__", 1)[1].strip())
    return (times[0] if times else 0.0), peak


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    _common.header("chapters executed in a fresh kernel (nbclient)")
    if not paths:
        print("   no notebooks found (notebooks/[0-9][0-9]_*.ipynb)")
        return 0
    print(f"   {'notebook':<34s} {'wall time':>10s} {'peak RSS':>10s}")
    worst = 0
    for path in paths:
        try:
            seconds, peak = execute(path)
        except Exception as e:  # a failing chapter is reported, the others still run
            print(f"   {path.name:<34s} FAILED: {type(e).__name__}: {str(e).splitlines()[0][:60]}")
            worst = 1
            continue
        mem = f"{peak / 2**30:.2f} GiB" if peak else "unknown"
        flags = []
        if seconds > TIME_LIMIT_S:
            flags.append(f"over the {TIME_LIMIT_S} s limit")
        elif seconds > TIME_GOAL_S:
            flags.append(f"over the {TIME_GOAL_S} s goal")
        if peak and peak > MEMORY_GOAL_GB * 1e9:
            flags.append(f"over {MEMORY_GOAL_GB:g} GB")
        print(f"   {path.name:<34s} {seconds:>8.1f} s {mem:>10s}  {'; '.join(flags)}", flush=True)
    print(
        f"   goals: <= {TIME_GOAL_S} s ({TIME_LIMIT_S} s hard limit) and <= {MEMORY_GOAL_GB:g} GB per "
        f"chapter; {_common.load()} at end"
    )
    return worst


if __name__ == "__main__":
    sys.exit(main())
