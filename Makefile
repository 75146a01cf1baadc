# relaytune: build, test and demo targets. Everything runs from the virtual environment in .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q

# The interpreter that creates the venv: python3.11 where there is one, else python3 (>= 3.11).
BOOTSTRAP_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

# torch and torchvision go in first, as one pinned pair: torchvision works only with the torch
# release it was built for, and with torch already in place pip does not resolve it again for
# the worker extra (to another build, possibly a multi-gigabyte CUDA one). Override the pair
# with `make TORCH_PINS="torch==X torchvision==Y"`, or leave the choice to pip with `TORCH_PINS=`.
PLATFORM := $(shell uname -s)-$(shell uname -m)
ifeq ($(PLATFORM),Linux-x86_64)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
else ifeq ($(PLATFORM),Linux-aarch64)
TORCH_PINS := torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS :=
endif

.PHONY: venv browser test lint demo bench clean distclean

venv: $(STAMP)

$(PY):
	@test -n "$(BOOTSTRAP_PYTHON)" || { echo "python3.11 or python3 is required" >&2; exit 1; }
	@$(BOOTSTRAP_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and \
		"relaytune needs Python >= 3.11, not " + sys.version.split()[0])'
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
ifneq ($(TORCH_PINS),)
	$(PY) -m pip install $(TORCH_PINS)
endif
	$(PY) -m pip install -e '.[worker,dev]' $(TORCH_PINS)
	touch $@

# The dashboard's tests drive Debian's chromium through its own chromedriver (nothing is
# downloaded by Selenium). Installed here when missing, where apt-get is and we are root;
# elsewhere those tests skip, and this says how to get them.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	else \
		echo "chromium or chromedriver missing: the dashboard tests will skip." >&2; \
		echo "Install them with: sudo apt-get install -y chromium chromium-driver" >&2; \
	fi

# Real PostgreSQL, Redis and S3 for the tests: see tests/backing/.
test: venv browser
	$(PY) -m tests.backing run -- $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: venv
	$(PY) scripts/demo.py

# The CPU benches (see BENCHMARKS.md), with the same services as the tests; results go to
# bench/results/. `make bench BENCH_ARGS=--quick` checks that they run, in tiny sizes.
BENCH_ARGS ?=
bench: venv
	$(PY) -m tests.backing run -- $(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
		-prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
