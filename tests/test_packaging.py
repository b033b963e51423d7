"""The project's packaging files agree with each other, and the notebooks with their text forms."""

import re
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {re.sub(r"\s+", "", r.split("#")[0]) for r in reqs}


def _environment_requirements() -> set[str]:
    # environment.yml is simple enough to read without a YAML parser: the pip entries are "      - spec".
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    return {
        re.sub(r"\s+", "", line.strip()[2:]) for line in lines[start + 1 :] if line.strip().startswith("- ")
    }


def test_environment_yml_mirrors_pyproject():
    pyproject, env = _pyproject_requirements(), _environment_requirements()
    only_pyproject, only_env = sorted(pyproject - env), sorted(env - pyproject)
    assert pyproject == env, f"only in pyproject.toml: {only_pyproject}; only in environment.yml: {only_env}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_notebook_matches_its_text_form(path):
    """Each chapter's .ipynb has the same cells as its jupytext .py source."""
    text = path.with_suffix(".py")
    assert text.exists(), f"{text.name} is missing (edit the .py, then regenerate the .ipynb)"
    stored = nbformat.read(path, as_version=4)
    source = jupytext.read(text)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(stored) == cells(source)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_notebook_is_stored_executed(path):
    """Stored executed top to bottom in one kernel, without errors, and small enough for the web."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert path.stat().st_size < 3e6


def test_make_installs_every_extra_that_make_test_and_make_book_use():
    """make test builds and browses the site, so its install step must bring the book and test extras."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    installed = re.search(r'pip install --quiet -e "\.\[([a-z,]+)\]"', makefile).group(1).split(",")
    assert set(extras) <= set(installed), f"extras not installed by make: {set(extras) - set(installed)}"


def test_ci_installs_chromium_for_the_browser_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "chromium" in ci
    assert ci.index("chromium") < ci.index("\nmake test")


def test_the_book_discovers_chapters_by_glob():
    """A new notebooks/NN_topic.ipynb appears in the site with no edit to the book's sources."""
    index = (ROOT / "book" / "index.md").read_text()
    assert re.search(r"```\{toctree\}\n(:[a-z]+:.*\n)*:glob:\n(:[a-z]+:.*\n)*\nchapters/\*\n```", index)
    assert "<!-- chapter-table -->" in index
