"""Assemble the course's website from the chapters and build it with Sphinx, MyST-NB and the book theme.

``scripts/build_book.py`` calls :func:`build`; ``tests/test_book_browser.py`` calls it too, on the stored
notebooks, to test the site in a browser. Nothing here executes a notebook: MyST-NB renders the outputs
the notebooks already hold (``nb_execution_mode = "off"`` in ``book/conf.py``).

What is generated, and from where (one source for each fact):

- the chapters: every ``notebooks/[0-9][0-9]_*.ipynb`` given (``make book`` gives them all), copied to
  ``chapters/`` in a staging folder; the sidebar lists them through a globbing toctree in
  ``book/index.md``, so a new chapter needs no edit here or in the book's configuration;
- the landing page's chapter table: each chapter's title (its ``# `` heading), the first clause of each
  bullet under "What you will learn" in its first Markdown cell, and its run time, which
  ``build_book.py`` stores in the notebook's metadata under ``vae_course`` each time it executes it
  (``make notebooks``, ``make book`` and ``--inplace``), so the time travels with the notebook;
- the teacher's page: the chapters' prerequisites, run times and exercise titles, grouped into the
  sessions listed in ``book/teacher.md``;
- the API reference: one ``automodule`` per public module present in ``vae_lib/``;
- the benchmark page: ``benchmarks/README.md`` as it is.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK_SOURCES = ROOT / "book"
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
TIMING_KEY = "vae_course"  # notebook metadata written by build_book.py: {"wall_time_s": ..., ...}

CHAPTER_TABLE_MARK = "<!-- chapter-table -->"
SYLLABUS_MARK = "<!-- syllabus-table -->"
EXERCISE_TABLE_MARK = "<!-- exercise-table -->"


@dataclass
class Exercise:
    number: str
    title: str
    coding: bool = False  # has a solution code cell (tagged "solution") that a reader runs


@dataclass
class Chapter:
    path: Path
    number: int
    title: str
    learn: list[str] = field(default_factory=list)
    prerequisites: str = ""
    exercises: list[Exercise] = field(default_factory=list)
    run_time_s: float | None = None
    busy: bool = False  # timed while the load average exceeded the core count: an overestimate

    @property
    def docname(self) -> str:
        return f"chapters/{self.path.stem}"


def chapter_paths(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(folder.glob(CHAPTER_GLOB))


# ----------------------------------------------------------------------------------------------------
# Reading a chapter


def _split_top_level(text: str, seps: tuple[str, ...]) -> str:
    """The text up to the first separator that is outside ``$...$``, backticks and brackets."""
    depth, in_math, in_code, i = 0, False, False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and in_math:
            i += 2
            continue
        if ch == "`" and not in_math:
            in_code = not in_code
        elif ch == "$" and not in_code:
            in_math = not in_math
        elif not (in_math or in_code):
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(depth - 1, 0)
            elif depth == 0 and i >= 12 and any(text.startswith(s, i) for s in seps):
                return text[:i]
        i += 1
    return text


def first_clause(bullet: str) -> str:
    """``"The ELBO, derived twice: ..."`` -> ``"The ELBO"``: what a chapter teaches, in a table cell."""
    text = " ".join(bullet.split())
    text = _split_top_level(text, (": ", "; ", ", ", ". ", " — ", " -- "))
    return text.rstrip(" .,;:")


def _bullets_after(lines: list[str], heading: re.Pattern) -> list[str]:
    bullets: list[str] = []
    start = next((i for i, line in enumerate(lines) if heading.search(line)), None)
    if start is None:
        return bullets
    for line in lines[start + 1 :]:
        if re.match(r"\s*[-*] ", line) and not line.startswith("  "):
            bullets.append(re.sub(r"^\s*[-*] ", "", line))
        elif bullets and line.startswith("  ") and line.strip():
            bullets[-1] += " " + line.strip()
        elif bullets and not line.strip():
            break
        elif line.strip() and not bullets and line.lstrip().startswith(("**", "#")):
            break
    return bullets


def _paragraph_after(text: str, label: re.Pattern) -> str:
    match = label.search(text)
    if not match:
        return ""
    paragraph = text[match.end() :].split("\n\n")[0]
    return " ".join(paragraph.split()).lstrip(":*. ").strip()


def run_time_of(nb: nbformat.NotebookNode) -> float | None:
    """Wall time stored by build_book.py; else the span of nbclient's per-cell timestamps, if any."""
    stored = nb.metadata.get(TIMING_KEY, {}).get("wall_time_s")
    if stored is not None:
        return float(stored)
    stamps = []
    for cell in nb.cells:
        execution = cell.get("metadata", {}).get("execution", {})
        stamps += [execution[k] for k in ("iopub.execute_input", "shell.execute_reply") if k in execution]
    if len(stamps) < 2:
        return None
    from datetime import datetime

    parsed = sorted(datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)
    return (parsed[-1] - parsed[0]).total_seconds()


def read_chapter(path: Path) -> Chapter:
    nb = nbformat.read(path, as_version=4)
    number = int(path.name[:2])
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    first = markdown[0] if markdown else ""
    lines = first.splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), path.stem)
    title = re.sub(r"^Chapter\s+\d+\s*[—:.-]+\s*", "", title)
    learn = [first_clause(b) for b in _bullets_after(lines, re.compile(r"what you will learn", re.I))]
    if not learn:  # no "What you will learn" list: the first sentence after the title
        body = "\n".join(line for line in lines if not line.startswith("#")).strip()
        learn = [first_clause(body.split("\n\n")[0])] if body else []
    prerequisites = _paragraph_after(first, re.compile(r"\*\*Prerequisites\*\*:?", re.I))

    exercises: list[Exercise] = []
    heading = re.compile(r"^#{2,4}\s+Exercise\s+(\d+)\s*[:.—-]\s*(.+?)\s*$", re.M | re.I)
    bold = re.compile(r"^\*\*Exercise\s+(\d+)\s*\(([^)]*)\)\.?\*\*", re.M | re.I)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for match in list(heading.finditer(cell.source)) or list(bold.finditer(cell.source)):
                exercises.append(Exercise(match.group(1), match.group(2).strip().rstrip(".")))
        elif cell.cell_type == "code":
            tags = cell.metadata.get("tags", [])
            first_line = cell.source.lstrip().splitlines()[0] if cell.source.strip() else ""
            solution = re.match(r"#\s*Solution to exercise\s+(\d+)", first_line, re.I)
            if "solution" in tags or solution:
                number_ = solution.group(1) if solution else (exercises[-1].number if exercises else "")
                for exercise in exercises:
                    if exercise.number == number_:
                        exercise.coding = True
    timing = nb.metadata.get(TIMING_KEY, {})
    busy = timing.get("load_average_1min", 0) > timing.get("cpu_count", 1e9)
    return Chapter(path, number, title, learn, prerequisites, exercises, run_time_of(nb), busy)


# ----------------------------------------------------------------------------------------------------
# Generated pages


def _seconds(value: float | None, busy: bool = False) -> str:
    return "—" if value is None else f"{value:.0f} s" + (" †" if busy else "")


def _cell(text: str) -> str:
    """A list-table cell holds Markdown; keep it on one line and free of pipes."""
    return " ".join(text.split()) or "—"


def chapter_table(chapters: list[Chapter], relative_to: str = "") -> str:
    rows = [
        "```{list-table}",
        ":header-rows: 1",
        ":widths: 6 30 54 10",
        ":class: chapter-table",
        "",
        "* - \u00a0",
        "  - Chapter",
        "  - What you will learn",
        "  - Run time",
    ]
    for ch in chapters:
        rows += [
            f"* - {ch.number}",
            f"  - [{_cell(ch.title)}]({relative_to}{ch.docname}.ipynb)",
        ]
        if ch.learn:
            rows.append(f"  - - {_cell(ch.learn[0])}")
            rows += [f"    - {_cell(item)}" for item in ch.learn[1:]]
        else:
            rows.append("  - —")
        rows.append(f"  - {_seconds(ch.run_time_s, ch.busy)}")
    rows.append("```")
    if any(ch.busy for ch in chapters):
        rows.append("\n† Timed while the machine was busy (load average above its core count): expect less.")
    return "\n".join(rows)


def _parse_sessions(text: str) -> list[tuple[str, list[int], str]]:
    """Lines ``Session label: 1, 2 | what the session is for`` inside ``<!-- sessions ... -->``."""
    block = re.search(r"<!--\s*sessions\s*\n(.*?)-->", text, re.S)
    sessions = []
    for line in (block.group(1) if block else "").splitlines():
        match = re.match(r"\s*([^:]+):\s*([\d,\s]+)\|\s*(.*)$", line)
        if match:
            numbers = [int(n) for n in re.findall(r"\d+", match.group(2))]
            sessions.append((match.group(1).strip(), numbers, match.group(3).strip()))
    return sessions


def syllabus_table(chapters: list[Chapter], teacher_text: str) -> str:
    by_number = {ch.number: ch for ch in chapters}
    sessions = _parse_sessions(teacher_text)
    listed = {n for _, numbers, _ in sessions for n in numbers}
    sessions += [(f"Extra ({ch.number:02d})", [ch.number], "") for ch in chapters if ch.number not in listed]
    rows = [
        "```{list-table}",
        ":header-rows: 1",
        ":widths: 12 42 34 12",
        ":class: syllabus-table",
        "",
        "* - Session",
        "  - Chapters",
        "  - Focus",
        "  - Run time",
    ]
    for label, numbers, focus in sessions:
        present = [by_number[n] for n in numbers if n in by_number]
        names = [
            f"{n:02d} [{_cell(by_number[n].title)}](chapters/{by_number[n].path.stem}.ipynb)"
            if n in by_number
            else f"{n:02d} (in preparation)"
            for n in numbers
        ]
        times = [ch.run_time_s for ch in present]
        total = sum(times) if present and None not in times else None
        rows.append(f"* - {label}")
        rows.append(f"  - - {names[0]}")
        rows += [f"    - {name}" for name in names[1:]]
        rows += [f"  - {_cell(focus)}", f"  - {_seconds(total)}"]
    rows.append("```")
    return "\n".join(rows)


def exercise_table(chapters: list[Chapter]) -> str:
    rows = [
        "```{list-table}",
        ":header-rows: 1",
        ":widths: 30 40 30",
        ":class: exercise-table",
        "",
        "* - Chapter",
        "  - Exercises (coding exercises, checked by an `assert`, marked ⚙)",
        "  - Prerequisites",
    ]
    for ch in chapters:
        rows.append(f"* - {ch.number:02d} [{_cell(ch.title)}](chapters/{ch.path.stem}.ipynb)")
        if ch.exercises:
            items = [f"{e.number}\\. {_cell(e.title)}{' ⚙' if e.coding else ''}" for e in ch.exercises]
            rows.append(f"  - - {items[0]}")
            rows += [f"    - {item}" for item in items[1:]]
        else:
            rows.append("  - —")
        rows.append(f"  - {_cell(ch.prerequisites)}")
    rows.append("```")
    return "\n".join(rows)


def public_modules(package: Path = ROOT / "vae_lib") -> list[str]:
    """``vae_lib.<name>`` for every public module and subpackage present now."""
    names = [p.stem for p in package.glob("*.py") if not p.stem.startswith("_")]
    names += [
        p.name for p in package.iterdir() if (p / "__init__.py").exists() and not p.name.startswith("_")
    ]
    return [f"{package.name}.{name}" for name in sorted(set(names))]


def api_page(modules: list[str]) -> str:
    """The API page, in reStructuredText: autodoc writes reST, which MyST Markdown would not parse."""
    title = "API reference"
    parts = [
        title,
        "=" * len(title),
        "",
        "Generated from the docstrings of ``vae_lib`` (Google style, read by ``sphinx.ext.napoleon``), one",
        "section per module; ``[source]`` next to a name opens its code. The names that ``vae_lib`` itself",
        "re-exports are importable from the package, ``import vae_lib; vae_lib.elbo(...)``.",
        "",
        ".. automodule:: vae_lib",
        "   :no-members:",
        "",
    ]
    for module in modules:
        heading = f"``{module}``"
        parts += [heading, "-" * len(heading), "", f".. automodule:: {module}", "   :members:", ""]
    return "\n".join(parts)


def benchmarks_page() -> str:
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n\nNo benchmarks yet.\n"
    # Links to the benchmark scripts point into the repository, not into the site: show them as code.
    return re.sub(r"\[([^\]]+)\]\((?!https?:)([^)#]+\.py)\)", r"`\2`", text)


# ----------------------------------------------------------------------------------------------------
# Staging and building


def _stage_chapter(path: Path, target: Path) -> None:
    """Copy a chapter for Sphinx; its folded solution cells say "Show the solution" instead of "code cell"."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            cell.metadata.setdefault("mystnb", {}).update(
                code_prompt_show="Show the solution ({type})", code_prompt_hide="Hide the solution ({type})"
            )
    nbformat.write(nb, target)


def stage(notebooks: list[Path], staging: Path, extra_pages: list[Path] = ()) -> list[Chapter]:
    """Write the Sphinx source folder: ``book/`` plus the chapters and the generated pages."""
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(BOOK_SOURCES, staging, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staging / "chapters").mkdir()
    downloads = staging / "_extra" / "downloads"
    downloads.mkdir(parents=True)
    chapters = []
    for path in sorted(notebooks, key=lambda p: p.name):
        _stage_chapter(path, staging / "chapters" / path.name)
        shutil.copy2(path, downloads / path.name)  # the notebook as stored/executed: "download .ipynb"
        text = ROOT / "notebooks" / (path.stem + ".py")
        if text.exists():
            shutil.copy2(text, downloads / text.name)  # its jupytext percent script: "download .py"
        chapters.append(read_chapter(path))
    if extra_pages:  # test fixtures: listed in their own hidden toctree
        (staging / "extra").mkdir()
        for page in extra_pages:
            if page.suffix == ".ipynb":
                _stage_chapter(page, staging / "extra" / page.name)
            else:
                shutil.copy2(page, staging / "extra" / page.name)
        with (staging / "index.md").open("a", encoding="utf-8") as f:
            f.write("\n```{toctree}\n:hidden:\n:caption: Test fixtures\n:glob:\n\nextra/*\n```\n")

    index = (staging / "index.md").read_text(encoding="utf-8")
    (staging / "index.md").write_text(index.replace(CHAPTER_TABLE_MARK, chapter_table(chapters)), "utf-8")
    teacher = (staging / "teacher.md").read_text(encoding="utf-8")
    teacher = teacher.replace(SYLLABUS_MARK, syllabus_table(chapters, teacher))
    teacher = teacher.replace(EXERCISE_TABLE_MARK, exercise_table(chapters))
    (staging / "teacher.md").write_text(teacher, encoding="utf-8")
    (staging / "api.rst").write_text(api_page(public_modules()), encoding="utf-8")
    (staging / "benchmarks.md").write_text(benchmarks_page(), encoding="utf-8")
    (staging / "_chapters.json").write_text(
        json.dumps([{"docname": c.docname, "title": c.title, "run_time_s": c.run_time_s} for c in chapters]),
        encoding="utf-8",
    )
    return chapters


def build(
    notebooks: list[Path],
    out_dir: Path,
    *,
    work_dir: Path | None = None,
    extra_pages: list[Path] = (),
    quiet: bool = True,
) -> float:
    """Stage the sources and run ``sphinx-build -b html`` into ``out_dir``; return the wall time in s."""
    work_dir = work_dir or out_dir.parent / f".{out_dir.name}-work"
    # Sphinx writes into work_dir/html (MyST-NB puts its image files next to it, in work_dir/jupyter_execute),
    # and the finished site is moved to out_dir, so that two builds with different out_dirs never mix.
    staging, doctrees, html = work_dir / "src", work_dir / "doctrees", work_dir / "html"
    t0 = time.perf_counter()
    stage([Path(p) for p in notebooks], staging, list(extra_pages))
    for stale in (doctrees, html, work_dir / "jupyter_execute"):
        if stale.exists():
            shutil.rmtree(stale)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-d", str(doctrees), "--keep-going"]
    command += ["-q"] if quiet else []
    command += [str(staging), str(html)]
    subprocess.run(command, check=True, cwd=ROOT)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(html, out_dir)
    return time.perf_counter() - t0
