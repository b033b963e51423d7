"""The course's website, read in a real browser: headless Chromium driven by Playwright.

The site is built here from the stored (already executed) notebooks, with execution off, plus one tiny
fixture page whose exercise has a folded Markdown solution with a formula and a folded solution code cell
(the course's exercise convention), into ``build/test-book``; then a local HTTP server on 127.0.0.1
serves it, and every page is visited. Each page must have: no console error and no page error; no
request outside the site and none that failed; every formula typeset by MathJax (a ``mjx-container`` in
every math element, no MathJax error, no raw ``$...$`` or ``\\(...\\)`` left in the text); every image
loaded (natural width > 0); every link inside the site pointing at a file that exists. Search must find a
chapter by a word of its title. A screenshot of each page goes to ``build/screenshots/``, with
``report.json`` (pages, formulas, figures, requests).

Chromium: ``$CHROMIUM``, else ``/usr/bin/chromium`` (Debian: ``apt-get install chromium``). Without it
(or without Playwright) the test is skipped, except under CI (``CI`` set), where it fails.
Set ``VAE_BOOK_DIR=build/book`` to test an already built site (``make book``'s) instead of building one.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
SHOTS = BUILD / "screenshots"
sys.path.insert(0, str(ROOT / "scripts"))
import book_site  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RAW_MATH = re.compile(
    r"\\\(|\\\)|\\\[|\\\]|\$[^$\s][^$\n]{0,200}?\$|\\(?:frac|mathbb|mathcal|begin|sum|log)\b"
)


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: .ci/run installs Chromium)")
    pytest.skip(reason)


def _chromium() -> str | None:
    for candidate in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _fixture_notebook(folder: Path) -> Path:
    """A page in the exercise convention: Markdown solution in <details>, solution code cell hide-cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Fixture: a folded exercise\n\nInline maths $a^2 + b^2 = c^2$."),
        nbformat.v4.new_markdown_cell(
            "## Exercises\n\n### Exercise 1: a sum\n\n"
            "Show that $\\sum_{i=1}^{n} i = n(n+1)/2$, then check it in code."
        ),
        nbformat.v4.new_markdown_cell(
            "<details><summary>Solution</summary>\n\nBy induction on $n$:\n\n"
            "$$\\sum_{i=1}^{n+1} i = \\frac{n(n+1)}{2} + n + 1 = \\frac{(n+1)(n+2)}{2}.$$\n\n</details>"
        ),
        nbformat.v4.new_code_cell(
            "# Solution to exercise 1: try it yourself first, then run this cell.\n"
            "n = 10\nassert sum(range(n + 1)) == n * (n + 1) // 2\nprint('fixture solution ran')",
            metadata={"tags": ["solution", "hide-cell"], "jupyter": {"source_hidden": True}},
            execution_count=1,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="fixture solution ran\n")],
        ),
    ]
    path = folder / "exercise_fixture.ipynb"
    nbformat.write(nb, path)
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site() -> Path:
    given = os.environ.get("VAE_BOOK_DIR")
    if given:
        return Path(given).resolve()
    try:
        import sphinx  # noqa: F401
    except ImportError:
        _unavailable("Sphinx is not installed (pip install -e '.[book]')")
    with tempfile.TemporaryDirectory() as tmp:
        fixture = _fixture_notebook(Path(tmp))
        seconds = book_site.build(book_site.chapter_paths(), BUILD / "test-book", extra_pages=[fixture])
    print(f"site built from the stored notebooks in {seconds:.1f} s")
    return BUILD / "test-book"


@pytest.fixture(scope="session")
def server(site):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser_context():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    chromium = _chromium()
    if chromium is None:
        _unavailable(
            "Chromium not found: install it (Debian/Ubuntu: apt-get install chromium) or set CHROMIUM"
        )
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


class _Recorder:
    """Everything one page asks for, and everything that went wrong."""

    def __init__(self, context, base: str):
        self.base, self.requests, self.problems = base, [], []
        context.on("request", self._request)
        context.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} ({r.failure})"))
        context.on("response", self._response)

    def _request(self, request):
        self.requests.append(request.url)
        if not request.url.startswith((self.base, "data:", "blob:", "about:")):
            self.problems.append(f"request outside the site: {request.url}")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def watch(self, page):
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def reset(self):
        self.requests, self.problems = [], []


def _site_chapters(site: Path) -> list[Path]:
    """The notebooks the site was built from (its download copies): stored ones, or make book's executed."""
    return sorted((site / "downloads").glob(book_site.CHAPTER_GLOB))


def _pages(site: Path) -> list[str]:
    pages = [p.relative_to(site).as_posix() for p in site.rglob("*.html")]
    return sorted(p for p in pages if not p.startswith(("_static/", "_sources/")))


def _wait_for_mathjax(page) -> None:
    page.wait_for_load_state("load")
    if page.evaluate("() => !!document.querySelector('.math')"):
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000
        )
        page.evaluate("() => MathJax.startup.promise")
    page.evaluate("() => document.fonts.ready.then(() => true)")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)


INSPECT = """() => {
  const main = document.querySelector('main') || document.body;
  const math = [...main.querySelectorAll('.math')];
  const clone = main.cloneNode(true);
  const skip = 'pre, code, .highlight, .cell_output, mjx-container, script, style';
  clone.querySelectorAll(skip).forEach(e => e.remove());
  return {
    math: math.length,
    typeset: math.filter(e => e.querySelector('mjx-container')).length,
    untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    containers: main.querySelectorAll('mjx-container').length,
    errors: [...main.querySelectorAll('mjx-merror')]
      .map(e => e.getAttribute('data-mjx-error') || e.textContent),
    text: clone.textContent,
    images: [...document.images]
      .map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  };
}"""


def test_every_page(site, server, browser_context):
    """Visit every page; collect every problem, then fail once with the whole list."""
    recorder = _Recorder(browser_context, server)
    page = browser_context.new_page()
    recorder.watch(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems, report = [], {"pages": 0, "formulas_typeset": 0, "figures_loaded": 0, "requests": 0}
    report["requests_outside_site"], per_page, t0 = 0, {}, time.perf_counter()
    for name in _pages(site):
        recorder.reset()
        page.goto(server + name)
        _wait_for_mathjax(page)
        found = page.evaluate(INSPECT)
        page_problems = list(recorder.problems)
        if found["typeset"] != found["math"]:
            page_problems.append(f"formulas not typeset: {found['untypeset'][:5]}")
        page_problems += [f"MathJax error: {e}" for e in found["errors"]]
        page_problems += [
            f"raw maths left in the text: {m.group(0)!r}" for m in RAW_MATH.finditer(found["text"])
        ]
        page_problems += [f"image not loaded: {i['src']}" for i in found["images"] if not i["ok"]]
        for link in found["links"]:
            parts = urlsplit(link)
            if link.startswith(server) and parts.path.endswith((".html", ".ipynb", ".py", ".js", ".css")):
                target = site / unquote(parts.path[len(urlsplit(server).path) :])
                if not target.exists():
                    page_problems.append(f"broken link: {link}")
        shot = name.replace("/", "__").removesuffix(".html")
        page.screenshot(path=SHOTS / f"{shot}.png")
        if name.startswith("chapters/") and page.locator("div.math").count():
            page.locator("div.math").first.scroll_into_view_if_needed()  # what the formulas look like
            page.screenshot(path=SHOTS / f"{shot}-maths.png")
        problems += [f"{name}: {p}" for p in page_problems]
        report["pages"] += 1
        report["formulas_typeset"] += found["containers"]
        report["figures_loaded"] += sum(i["ok"] for i in found["images"])
        report["requests"] += len(recorder.requests)
        report["requests_outside_site"] += sum(
            not u.startswith((server, "data:", "blob:")) for u in recorder.requests
        )
        per_page[name] = {
            "formulas": found["containers"],
            "figures": len(found["images"]),
            "requests": len(recorder.requests),
        }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["per_page"] = per_page
    (SHOTS / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "per_page"}))
    page.close()
    assert report["pages"] >= len(_site_chapters(site)) + 4
    assert not problems, "\n".join(problems[:60])


def test_landing_page_lists_every_chapter_with_its_run_time(site, server, browser_context):
    page = browser_context.new_page()
    page.goto(server + "index.html")
    _wait_for_mathjax(page)
    rows = page.locator("table.chapter-table tbody tr")
    assert [p.name for p in _site_chapters(site)] == [p.name for p in book_site.chapter_paths()]
    chapters = [book_site.read_chapter(p) for p in _site_chapters(site)]
    assert rows.count() == len(chapters)
    for row, chapter in zip(rows.all(), chapters, strict=True):
        href = row.locator("a").first.get_attribute("href")
        assert href == f"chapters/{chapter.path.stem}.html"
        if chapter.run_time_s is not None:
            assert row.locator("td").last.inner_text().strip().startswith(f"{chapter.run_time_s:.0f} s")
    sidebar = page.locator("nav.bd-docs-nav a").all_inner_texts()
    assert len([t for t in sidebar if t.strip()]) >= len(chapters) + 3
    page.screenshot(path=SHOTS / "index-full.png", full_page=True)
    page.close()


def test_chapter_pages_link_their_ipynb_and_py_and_to_the_next_chapter(site, server, browser_context):
    page = browser_context.new_page()
    paths = _site_chapters(site)
    for i, path in enumerate(paths):
        page.goto(server + f"chapters/{path.stem}.html")
        links = page.locator("p.chapter-downloads a")
        hrefs = [
            urljoin(page.url, h) for h in [links.nth(k).get_attribute("href") for k in range(links.count())]
        ]
        assert hrefs == [server + f"downloads/{path.stem}.ipynb", server + f"downloads/{path.stem}.py"]
        for href in hrefs:
            response = page.request.get(href)
            assert response.ok and len(response.body()) > 100, href
        if i + 1 < len(paths):
            nxt = page.locator("a.right-next").get_attribute("href")
            assert nxt.endswith(f"{paths[i + 1].stem}.html")
    page.close()


def test_solutions_are_folded_and_open_with_their_formulas_typeset(site, server, browser_context):
    if os.environ.get("VAE_BOOK_DIR"):
        pytest.skip("the fixture page is only in the site this test builds")
    page = browser_context.new_page()
    page.goto(server + "extra/exercise_fixture.html")
    _wait_for_mathjax(page)
    solution = page.locator("details", has=page.locator("summary", has_text="Solution")).first
    assert solution.get_attribute("open") is None  # folded
    assert solution.locator("mjx-container").count() >= 2  # $n$ and the display formula, typeset
    assert not solution.locator("mjx-container").last.is_visible()
    solution.locator("summary").click()
    assert solution.locator("mjx-container").last.is_visible()
    box = solution.locator("mjx-container").last.bounding_box()
    assert box["width"] > 50 and box["height"] > 10

    code = page.locator("details.hide").first  # MyST-NB's hide-cell: the whole cell, folded
    assert code.get_attribute("open") is None
    assert code.locator("summary").inner_text().strip().startswith("Show the solution")
    assert not page.get_by_text("assert sum(range(n + 1))").is_visible()
    code.locator("summary").click()
    assert page.get_by_text("assert sum(range(n + 1))").is_visible()
    assert code.locator(".cell_output", has_text="fixture solution ran").is_visible()
    page.screenshot(path=SHOTS / "fixture-opened.png", full_page=True)
    page.close()


def test_search_finds_a_chapter_by_a_word_of_its_title(site, server, browser_context):
    chapters = [book_site.read_chapter(p) for p in _site_chapters(site)]
    chapter = next((c for c in chapters if c.number == 2), chapters[0])
    words = re.findall(r"[A-Za-z]{6,}", re.sub(r"\$[^$]*\$", " ", chapter.title))
    word = max(words, key=len).lower()
    page = browser_context.new_page()
    page.goto(server + "index.html")
    page.locator("button.search-button__button:visible").first.click()
    box = page.locator("#pst-search-dialog input[name=q]")
    box.fill(word)
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q="))
    page.wait_for_function(
        "() => { const s = document.querySelector('#search-results p.search-summary'); "
        "return s && /found|did not match/.test(s.textContent); }",
        timeout=30_000,
    )
    results = [
        urljoin(page.url, h)
        for h in page.locator("#search-results li a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
    ]
    page.screenshot(path=SHOTS / "search.png")
    page.close()
    assert any(f"chapters/{chapter.path.stem}.html" in r for r in results), (word, results)
