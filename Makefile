# The two commands of the README: `make book` (run every chapter, build the website) and `make test`
# (lint, unit tests, nbval over every notebook, the website in a browser). Both create or reuse .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
LINTED := vae_lib tests scripts benchmarks notebooks book

.PHONY: install book site test unit nbval lab lint notebooks bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test,book]"
	touch $(STAMP)

## make book: execute every chapter in a fresh kernel into build/executed/, then build the site into
## build/book/ (Sphinx + MyST-NB + sphinx-book-theme, from those executed copies): open build/book/index.html
book: $(STAMP)
	$(BIN)/python scripts/build_book.py $(NOTEBOOKS)

## make site: the same site from the notebooks as stored (no execution; about half a minute)
site: $(STAMP)
	$(BIN)/python scripts/build_book.py --no-execute $(NOTEBOOKS)

## make test: lint, unit tests, every notebook under nbval (re-executed, errors and checked outputs fail),
## and tests/test_book_browser.py: the site built from the stored notebooks, visited in headless Chromium
test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider

nbval: $(STAMP)
	$(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

## make notebooks: re-execute the chapters in place (what is committed is stored executed)
notebooks: $(STAMP)
	$(BIN)/python scripts/build_book.py --inplace $(NOTEBOOKS)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build
