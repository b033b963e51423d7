"""scripts/book_site.py: what the site's generated pages say about each chapter, without building it."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import book_site  # noqa: E402


@pytest.mark.parametrize(
    ("bullet", "clause"),
    [
        (
            "The evidence lower bound (ELBO), derived twice: with Jensen's inequality",
            "The evidence lower bound (ELBO)",
        ),
        (
            "The generative story of a VAE, $z \\sim p(z)$ then $x \\sim p(x, z)$",
            "The generative story of a VAE",
        ),
        ("How $q(z \\mid x)$ and $p(x, z)$ differ", "How $q(z \\mid x)$ and $p(x, z)$ differ"),
        ("Why `f(a, b)` fails: a test", "Why `f(a, b)` fails"),
        ("What (a, b) means.", "What (a, b) means"),
    ],
)
def test_first_clause_cuts_outside_maths_code_and_brackets(bullet, clause):
    assert book_site.first_clause(bullet) == clause


def _chapter(tmp_path, metadata=None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update(metadata or {})
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# Chapter 7 — Rate and distortion\n\n**What you will learn**\n\n"
            "- The ELBO as distortion plus rate, measured: a sweep\n"
            "- Why the KL collapses, and\n  three remedies\n\n"
            "**Prerequisites**: Chapter 4 (digits).\n"
        ),
        nbformat.v4.new_markdown_cell("## Exercises\n\n### Exercise 1: a β sweep\n\nDo it."),
        nbformat.v4.new_code_cell(
            "# Solution to exercise 1: try it yourself first, then run this cell.\nassert 1",
            metadata={"tags": ["solution", "hide-cell"]},
        ),
        nbformat.v4.new_markdown_cell(
            "### Exercise 2: a derivation\n\n<details><summary>Solution</summary>\n\n$x$\n\n</details>"
        ),
    ]
    path = tmp_path / "07_rate.ipynb"
    nbformat.write(nb, path)
    return path


def test_read_chapter_takes_title_teachings_prerequisites_exercises_and_run_time(tmp_path):
    timing = {"wall_time_s": 41.6, "load_average_1min": 5.0, "cpu_count": 2}
    chapter = book_site.read_chapter(_chapter(tmp_path, {book_site.TIMING_KEY: timing}))
    assert (chapter.number, chapter.title) == (7, "Rate and distortion")
    assert chapter.learn == ["The ELBO as distortion plus rate", "Why the KL collapses"]
    assert chapter.prerequisites == "Chapter 4 (digits)."
    assert [(e.number, e.title, e.coding) for e in chapter.exercises] == [
        ("1", "a β sweep", True),
        ("2", "a derivation", False),
    ]
    assert chapter.run_time_s == 41.6 and chapter.busy
    table = book_site.chapter_table([chapter])
    assert "[Rate and distortion](chapters/07_rate.ipynb)" in table and "42 s †" in table


def test_run_time_falls_back_to_cell_timestamps_and_else_is_unknown(tmp_path):
    path = _chapter(tmp_path)
    assert book_site.read_chapter(path).run_time_s is None
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].metadata["execution"] = {
        "iopub.execute_input": "2026-01-01T10:00:00.000Z",
        "shell.execute_reply": "2026-01-01T10:00:31.500Z",
    }
    nbformat.write(nb, path)
    assert book_site.read_chapter(path).run_time_s == pytest.approx(31.5)


def test_syllabus_lists_every_chapter_once_even_if_no_session_names_it(tmp_path):
    chapter = book_site.read_chapter(_chapter(tmp_path))
    teacher = "<!-- sessions\nSession 1: 1, 2 | the start\n-->"
    table = book_site.syllabus_table([chapter], teacher)
    assert "01 (in preparation)" in table and "Extra (07)" in table and "[Rate and distortion]" in table


def test_api_page_documents_every_public_module_present():
    modules = book_site.public_modules()
    assert "vae_lib.objectives" in modules and not any(m.split(".")[-1].startswith("_") for m in modules)
    page = book_site.api_page(modules)
    assert all(f".. automodule:: {m}\n   :members:" in page for m in modules)
