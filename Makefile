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
# pip byte-compiles what it installs: keep it.  Without (--no-compile) a fresh `make env` was 15 s
# shorter, but where PYTHONDONTWRITEBYTECODE is set (this machine) every process then compiles
# every module it imports, every time: the demo's first stage took 14.8 s instead of 3.5.
# Python 3.11's own pip installs an editable pyproject package, so it is not upgraded first.
PIP := $(BIN)/pip install -q

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

# Our own modules are byte-compiled before every run: an editable install is not, and where
# PYTHONDONTWRITEBYTECODE is set every Ray worker would compile them again on import (0.52 -> 0.34
# CPU-s per process importing the stages, measured; compileall skips the files already current).
PYC := $(BIN)/python -m compileall -q xqg_ray tests bench tools > /dev/null

demo: env
	$(PYC)
	$(BIN)/xqg-ray models
	$(BIN)/xqg-ray run conf/demo.yaml

smoke: env
	$(PYC)
	$(BIN)/xqg-ray run conf/smoke.yaml

# Two pytest workers, whole files each (module fixtures such as the bench scripts' runs stay in
# one process): most of the suite's seconds are Ray clusters and subprocess drivers starting,
# which leave a core idle.  TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: test-env
	$(PYC)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache
