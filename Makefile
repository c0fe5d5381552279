# The two commands of the README: `make reproduce` (the main job) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test reproduce bench gpu-check clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# the smoke suite through the root Snakefile with the local profile (profiles/default): reports/smoke/, then dvc.lock
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --config suite=smoke

bench: $(STAMP)
	$(VENV)/bin/rotrnn bench

# the one prepared device check (<= 8 minutes on one H100/H200): reports/perf/gpu-<device>.md and .csv
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
