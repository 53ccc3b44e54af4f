# mlxinterp — `make test` and `make demo` work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo docs lint bench info sysdeps clean

$(STAMP): pyproject.toml
	-@bash scripts/install_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,plot]"
	@touch $(STAMP)

test: $(STAMP)  ## lint, then the whole suite (unit tests, matrix, doctests, notebooks, browser)
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

demo: $(STAMP)  ## the main job: lenses, patching, steering on tinyworld -> mlxinterp-report.html
	$(PY) -m mlxinterp demo

docs: $(STAMP)  ## API reference from the docstrings -> docs/api (fails on warnings)
	$(PY) scripts/build_docs.py

info: $(STAMP)
	$(PY) -m mlxinterp info

bench: $(STAMP)  ## benchmarks (slow: minutes)
	$(PY) benchmarks/capture_overhead.py
	$(PY) benchmarks/tuned_lens_train.py
	$(PY) benchmarks/patching_sweep.py

sysdeps:  ## Debian's OpenBLAS and Chromium (root + apt only; best effort)
	bash scripts/install_system_deps.sh

clean:
	rm -rf $(VENV) build src/*.egg-info
