# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this machine's disk; plain `torch`
# would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
export RAY_AUTH_MODE ?= disabled
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env test-env demo smoke test clean

# What the job needs; the test tools (pytest, moto, statsmodels ...) are a second step that only
# `make test` takes: about 20 s of a fresh clone's `make demo` they would otherwise cost.
# --no-compile: pip would byte-compile every module of torch, ray, transformers ... (~15 s of a
# fresh `make env`, measured: torch 15.5 -> 6.8 s, the rest 44.6 -> 38.5 s); Python compiles the
# few it imports on first use instead.  Python 3.11's own pip installs an editable pyproject
# package, so it is not upgraded first (a round trip to the index).
PIP := $(BIN)/pip install -q --no-compile

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[bundled]'
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(PIP) -e '.[bundled,test]'
	touch $@

env: $(BIN)/.installed

test-env: $(BIN)/.installed-test

demo: env
	$(BIN)/xqg-ray models
	$(BIN)/xqg-ray run conf/demo.yaml

smoke: env
	$(BIN)/xqg-ray run conf/smoke.yaml

# Two pytest workers, whole files each (module fixtures such as the bench scripts' runs stay in
# one process): most of the suite's seconds are Ray clusters and subprocess drivers starting,
# which leave a core idle.  TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: test-env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache
