# mlxinterp — `make test` and `make demo` work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo lint bench info blas clean

$(STAMP): pyproject.toml
	-@bash scripts/install_blas.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,plot]"
	@touch $(STAMP)

test: $(STAMP)  ## lint, then the whole suite (unit tests, matrix, doctests)
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

demo: $(STAMP)  ## the main job
	$(PY) -m mlxinterp demo

info: $(STAMP)
	$(PY) -m mlxinterp info

bench: $(STAMP)  ## benchmarks (slow: minutes)
	$(PY) benchmarks/capture_overhead.py

blas:  ## install Debian's OpenBLAS (root + apt only)
	bash scripts/install_blas.sh

clean:
	rm -rf $(VENV) build src/*.egg-info
