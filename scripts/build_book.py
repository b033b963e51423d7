"""Execute chapters in a fresh kernel and write the HTML book (``make book``), or re-store them executed.

Usage:
  python scripts/build_book.py notebooks/*.ipynb            # -> build/executed/*.ipynb, build/book/*.html
  python scripts/build_book.py --inplace notebooks/*.ipynb  # re-execute and overwrite the stored chapters

Each chapter runs top to bottom in its own kernel; its wall time is printed and listed on the index page.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--inplace", action="store_true", help="overwrite the stored notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args()

    executed_dir, book_dir = args.out / "executed", args.out / "book"
    entries = []
    for path in args.notebooks:
        print(f"executing {path} ...", flush=True)
        nb, seconds = execute(path)
        print(f"  {path.name}: {seconds:.1f} s", flush=True)
        if args.inplace:
            nbformat.write(nb, path)
            continue
        executed_dir.mkdir(parents=True, exist_ok=True)
        book_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_dir / path.name)
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
        page = book_dir / (path.stem + ".html")
        page.write_text(body, encoding="utf-8")
        entries.append((page.name, title_of(nb, path.stem), seconds))
    if not args.inplace:
        items = "\n".join(
            f'<li><a href="{html.escape(href)}">{html.escape(title)}</a> '
            f"<small>(executed in {secs:.0f} s)</small></li>"
            for href, title, secs in entries
        )
        (book_dir / "index.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>Variational autoencoders with JAX</title>"
            "<style>body{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5}</style>"
            "</head>"
            "<body><h1>Variational autoencoders with JAX, Flax and Optax</h1>"
            f"<p>Chapters, executed by <code>make book</code>:</p><ol>{items}</ol></body></html>\n",
            encoding="utf-8",
        )
        print(f"wrote {book_dir / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
