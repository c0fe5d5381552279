# The two commands of the README: `make reproduce` (the main job) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test reproduce bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# the smoke suite through Snakemake with the local profile (workflow/profiles/default), then reports/smoke/
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --config suite=smoke

bench: $(STAMP)
	$(VENV)/bin/rotrnn bench layer

clean-venv:
	rm -rf $(VENV)
