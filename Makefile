# The two commands of the README: `make book` (run every chapter, write the HTML book) and `make test`
# (unit tests plus nbval over every notebook). Both create or reuse the virtual environment .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: install book test unit nbval lab lint notebooks bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test]"
	touch $(STAMP)

## make book: execute every chapter in a fresh kernel into build/, then write build/book/index.html
book: $(STAMP)
	$(BIN)/python scripts/build_book.py $(NOTEBOOKS)

## make test: lint, unit tests, then every notebook under nbval (re-executed, errors and checked outputs fail)
test: $(STAMP)
	$(BIN)/ruff check vae_lib tests scripts benchmarks notebooks
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
	$(BIN)/ruff check vae_lib tests scripts benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build
