# RLHF Lab. `make demo` runs the main job on the Tiny World; `make test` runs every test.
# Both set themselves up from nothing: a .venv with pinned packages (torch through
# constraints.txt, so the CPU wheel is used), and the Debian packages the tests need.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= tiny

.PHONY: setup system-deps demo test lint format docs dashboard notebook clean

setup: $(STAMP)

# Debian packages the tests need: chromium, which tests/test_dashboard_browser.py drives through
# Playwright (Playwright's own browser download is never used). Only `test` depends on this
# target, so `setup`, `demo` and `dashboard` need neither root nor apt. As root (CI) apt-get runs
# directly, otherwise through sudo.
CHROMIUM := /usr/bin/chromium
system-deps:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "error: $(CHROMIUM) is missing; as root: apt-get install chromium"; exit 1; fi; \
	  command -v apt-get >/dev/null || { echo "error: $(CHROMIUM) is missing and there is no apt-get; install Chromium there"; exit 1; }; \
	  set -x; \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (the lab needs Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/rlhf world build --recipe $(RECIPE)
	$(BIN)/rlhf pipeline --recipe $(RECIPE)

# The tests run on TEST_WORKERS pytest-xdist processes with one torch thread each: on 2 cores,
# two single-threaded workers took 7 min where one took 12 (docs/benchmarks.md, "make test").
# --dist loadscope keeps each test module on one worker, so its module fixtures are built once.
# TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
test: system-deps setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: setup
	$(BIN)/ruff check rlhf tests benchmarks dashboard
	$(BIN)/ruff format --check rlhf tests benchmarks dashboard

docs: setup
	$(BIN)/rlhf config docs --format markdown > docs/config.md

format: setup
	$(BIN)/ruff format rlhf tests benchmarks dashboard
	$(BIN)/ruff check --fix rlhf tests benchmarks dashboard

dashboard: setup
	$(BIN)/rlhf dashboard

# JupyterLab on 127.0.0.1 (installed into .venv on first use; the tests need only nbclient).
notebook: setup
	test -x $(BIN)/jupyter-lab || PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet jupyterlab==4.6.6
	$(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
