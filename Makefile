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

test: setup chromium
	$(PY) -m pytest -q

# ---- The companion book (profiles -> papermill -> notebooks -> results -> book) ----
# make reproduce [PROFILE=auto|smoke|tiny|paper]   every notebook of the profile, then the book
#                [ALLOW_CPU=1]                     run PROFILE=paper without a CUDA GPU (labelled in the book)
# make notebook NB=05_addition ARGS="-p seed 3"     one notebook with overrides, then the book
# make book                                        build book/_build/html from the chapters (warnings are errors)
# make book-check                                  open every page in headless chromium (needs `make chromium`)
PROFILE ?= auto
NB ?=
ARGS ?=

.PHONY: reproduce notebook book book-check chromium
reproduce: setup
	$(PY) -m companion.runner --profile $(PROFILE) $(if $(ALLOW_CPU),--allow-cpu)
	$(PY) -m companion.book build

notebook: setup
	@test -n "$(NB)" || { echo "error: NB: name a notebook, e.g. make notebook NB=01_gated_attention" >&2; exit 2; }
	$(PY) -m companion.runner --profile $(PROFILE) $(if $(ALLOW_CPU),--allow-cpu) --only $(NB) $(ARGS)
	$(PY) -m companion.book build

book: setup
	$(PY) -m companion.book build

book-check: book chromium
	$(PY) -m companion.bookcheck book/_build/html --screenshots artifacts/screenshots

chromium:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 || { echo "error: chromium: missing; run 'apt-get install -y chromium' as root" >&2; exit 2; }; DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }

# ---- Ratio benchmarks (sparse vs dense in one process); results/benchmarks/ and the README block ----
.PHONY: bench
bench: setup
	cd benchmarks && ../$(PY) bench_train_step.py && ../$(PY) bench_count_edges.py && ../$(PY) bench_gate.py
	test ! -f benchmarks/bench_eap.py || (cd benchmarks && ../$(PY) bench_eap.py)
	$(PY) -m companion.readme_blocks
