"""Execute chapters in a fresh kernel and build the website (``make book``), or re-store them executed.

Usage:
  python scripts/build_book.py notebooks/*.ipynb            # execute -> build/executed/, site -> build/book/
  python scripts/build_book.py --inplace notebooks/*.ipynb  # re-execute and overwrite the stored chapters
  python scripts/build_book.py --no-execute                 # site from the stored notebooks, no execution

Each chapter runs top to bottom in its own kernel; its wall time is printed, with the kernel's CPU time and
the load average, and stored in the notebook's metadata (``vae_course``), where the site's chapter table
reads it. The site is built by Sphinx + MyST-NB + sphinx-book-theme from ``book/`` (see
``scripts/book_site.py``) and never executes anything itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_site  # noqa: E402  (scripts/book_site.py; imports no Sphinx until a site is built)

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run ``path`` top to bottom in a fresh ``python3`` kernel; return it executed, and the wall time.

    The kernel's start-up is included in the time. The kernel is shut down (and reaped) at the end, so the
    children's CPU time measured around the run is the kernel's; both go into ``nb.metadata["vae_course"]``.
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    cpu0, t0 = _children_cpu_seconds(), time.perf_counter()
    client.execute()
    seconds, cpu = time.perf_counter() - t0, _children_cpu_seconds() - cpu0
    nb.metadata[book_site.TIMING_KEY] = {
        "wall_time_s": round(seconds, 1),
        "kernel_cpu_time_s": round(cpu, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "executed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return nb, seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default (without --inplace): every chapter")
    parser.add_argument("--inplace", action="store_true", help="overwrite the stored notebooks")
    parser.add_argument(
        "--no-execute", action="store_true", help="build the site from the notebooks as stored"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args()
    if args.inplace and not args.notebooks:
        parser.error("--inplace needs the notebooks to re-execute (make notebooks passes them all)")
    if args.inplace and args.no_execute:
        parser.error("--inplace and --no-execute exclude each other")
    notebooks = args.notebooks or book_site.chapter_paths()

    executed_dir, book_dir = args.out / "executed", args.out / "book"
    site_sources = []
    for path in notebooks:
        if args.no_execute:
            site_sources.append(path)
            continue
        print(f"executing {path} ...", flush=True)
        nb, seconds = execute(path)
        info = nb.metadata[book_site.TIMING_KEY]
        print(
            f"  {path.name}: {seconds:.1f} s (kernel CPU {info['kernel_cpu_time_s']:.1f} s, "
            f"load average {info['load_average_1min']:.2f})",
            flush=True,
        )
        if args.inplace:
            nbformat.write(nb, path)
            continue
        executed_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_dir / path.name)
        site_sources.append(executed_dir / path.name)
    if not args.inplace:
        seconds = book_site.build(site_sources, book_dir, work_dir=args.out / "book-work")
        print(
            f"wrote {book_dir / 'index.html'} ({len(site_sources)} chapters, site built in {seconds:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
