"""Small Sphinx extension for the course's site: download links and run time on every chapter page.

``scripts/book_site.py`` copies each chapter's notebook and its jupytext ``.py`` to ``_extra/downloads/``
(published as ``downloads/``) and writes ``_chapters.json`` (titles and run times). On a chapter page this
extension puts a line under the title, "Download: notebook (.ipynb) · Python script (.py) · runs in N s",
and adds the ``.py`` to the theme's download menu.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path


def _chapters(app) -> dict[str, dict]:
    if not hasattr(app, "_course_chapters"):
        path = Path(app.srcdir) / "_chapters.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        app._course_chapters = {entry["docname"]: entry for entry in data}
    return app._course_chapters


def add_chapter_links(app, pagename, templatename, context, doctree):
    chapter = _chapters(app).get(pagename)
    if chapter is None or "body" not in context:
        return
    stem = pagename.split("/")[-1]
    pathto = context["pathto"]
    ipynb, py = pathto(f"downloads/{stem}.ipynb", 1), pathto(f"downloads/{stem}.py", 1)
    parts = [
        f'<a class="reference download" href="{escape(ipynb)}" download>notebook (.ipynb)</a>',
        f'<a class="reference download" href="{escape(py)}" download>Python script (.py)</a>',
    ]
    if chapter.get("run_time_s") is not None:
        parts.append(f"runs top to bottom in about {chapter['run_time_s']:.0f} s on 2 CPU cores")
    bar = '<p class="chapter-downloads">Download this chapter: ' + " · ".join(parts) + "</p>"
    body = context["body"]
    end = body.find("</h1>")
    if end >= 0:
        context["body"] = body[: end + 5] + "\n" + bar + body[end + 5 :]

    # The theme's download menu: point .ipynb at the published copy and add the .py next to it.
    for group in context.get("header_buttons", []):
        if group.get("label") != "download-buttons":
            continue
        buttons = group.get("buttons", [])
        for button in buttons:  # the page's source is the notebook: offer the published copy
            if str(button.get("url", "")).endswith(".ipynb"):
                button["url"] = ipynb
        buttons.insert(
            1,
            {
                "type": "link",
                "url": py,
                "text": ".py",
                "icon": "fas fa-file-code",
                "tooltip": "Download the chapter as a Python script (jupytext percent format)",
                "label": "download-script-button",
            },
        )


def setup(app):
    # After sphinx-book-theme has filled its header buttons (it uses priority 501).
    app.connect("html-page-context", add_chapter_links, priority=600)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
