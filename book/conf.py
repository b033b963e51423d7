"""Sphinx configuration of the course's website (``make book``; assembled by ``scripts/book_site.py``).

Sphinx + MyST-NB + sphinx-book-theme: the notebooks are rendered as stored (executed by
``scripts/build_book.py`` beforehand, never here), formulas are typeset by a MathJax copy served from the
site itself, and no page requests anything outside the site.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "Variational autoencoders with JAX, Flax and Optax"
author = "the vae-lib authors"
copyright = "the vae-lib authors, Apache-2.0"
html_title = "VAEs with JAX, Flax and Optax"

extensions = [
    "myst_nb",  # notebooks and MyST Markdown (includes myst_parser)
    "sphinx.ext.autodoc",  # the API reference from vae_lib's docstrings
    "sphinx.ext.napoleon",  # ... which are Google style
    "sphinx.ext.viewcode",  # "[source]" links to the library's code
    "sphinx-mathjax-offline",  # MathJax 3 served from _static/mathjax, not from a CDN
    "course_site",  # book/_ext/course_site.py: per-chapter download links, run times
]

# Sources: the chapters are copied to chapters/ by scripts/book_site.py; _extra/ holds the downloads.
exclude_patterns = ["_extra", "**.ipynb_checkpoints", "_chapters.json"]
root_doc = "index"

# MyST: $...$ and $$...$$ maths, \begin{align} blocks, ::: fences, <img> tags, anchors for ## headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "html_image", "html_admonition"]
myst_heading_anchors = 3
myst_dmath_double_inline = True  # $$...$$ inside a paragraph or list item, as JupyterLab renders it

# MyST-NB: never execute here (build_book.py already did, in a fresh kernel per chapter).
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js = {}  # no widget state in the stored notebooks, and no CDN script for it

# API reference.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields, not as second descriptions of NamedTuple fields

# HTML.
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_extra_path = ["_extra"]
html_copy_source = True  # the theme's download button offers the page's .ipynb from _sources/
html_show_sphinx = True
html_favicon = "_static/favicon.svg"  # else the browser asks for /favicon.ico, which 404s
html_context = {"default_mode": "light"}  # the theme logs a console error when no mode is stored yet
html_theme_options = {
    "home_page_in_toc": True,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "use_repository_button": False,  # the site works offline; the repository is where you cloned it
    "show_toc_level": 2,
    "show_navbar_depth": 1,
    "navigation_with_keys": False,
}
