# Two commands for a new user: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean help prometheus-tool

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel on this kind of machine; an unpinned torch pulls CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[full,dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv with everything pinned

demo: $(STAMP)  ## synthetic corpus -> tiny model -> ONNX fp32/int8 -> real local Triton -> classify held-out clips
	$(BIN)/ser demo

test: $(STAMP) prometheus-tool  ## the whole test suite (CI runs exactly this)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

# Prometheus (Debian) for tests/test_deploy.py's real scrape; installed when missing and we are root,
# otherwise those tests skip and say so. Compose, kubectl and the schemas come with the venv (dev extra).
prometheus-tool:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "prometheus not installed (apt-get install prometheus as root): its tests will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff check .

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf .cache build model_repository/portable model_repository/native
