# Two commands for a new user: `make demo` and `make test`. Everything else is optional.
# Test tiers (tests/conftest.py): tests/unit (make test-fast), tests/integration (the real
# tritonserver), tests/system (training, torchrun, qemu-user, Prometheus). make test runs all three.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# Triton's ONNX Runtime backend (the native runtime), built once per pin set (deploy/native_backend/pins.py).
# Its sources come from GitHub, or from a local folder of the same archives: make TRITON_BACKEND_SOURCES=DIR.
TRITON_BACKEND_SOURCES ?=
BACKEND := build/triton-backends/onnxruntime/BUILD_INFO.json

.PHONY: demo test test-fast lint venv clean help system-tools build-tools

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel on this kind of machine; an unpinned torch pulls CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[full,dev,ray]'
	touch $(STAMP)

# Rebuilt when a pin or the environment changes; `python -m deploy.native_backend` itself skips a build whose
# stamp matches the pins, so touching the stamp afterwards keeps make from asking again.
$(BACKEND): $(STAMP) deploy/native_backend/pins.py | build-tools
	$(BIN)/python -m deploy.native_backend $(if $(TRITON_BACKEND_SOURCES),--sources "$(TRITON_BACKEND_SOURCES)")
	touch $@

venv: $(STAMP) $(BACKEND)  ## create .venv with everything pinned, and build Triton's ONNX Runtime backend

demo: $(STAMP) $(BACKEND)  ## synthetic corpus -> tiny model -> ONNX fp32/int8 -> real local Triton -> classify held-out clips
	$(BIN)/ser demo

test: $(STAMP) $(BACKEND) system-tools  ## the whole test suite: unit, integration and system tiers (CI runs this, after lint)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the unit tier only (tests/unit): no server, no training
	$(BIN)/python -m pytest -q -ra tests/unit $(PYTEST_ARGS)

# Debian tools some tests use, installed when missing and we are root (otherwise those tests skip and say so):
# Prometheus for tests/system/test_deploy.py's real scrape; qemu-user to run the int8 model on an emulated
# AVX2-only CPU (tests/system/test_export.py, tests/system/test_int8_selection.py); curl, Node.js and npm for the
# server-side audio callers (tests/integration/test_audio_service_server.py). Compose, kubectl and the schemas come
# with the venv (dev extra).
system-tools:
	@missing=""; \
	{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing="$$missing prometheus"; \
	command -v qemu-x86_64 >/dev/null || missing="$$missing qemu-user"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "not installed:$$missing (apt-get install as root): their tests will skip"; fi

# What building the ONNX Runtime backend needs from Debian, installed when missing and we are root (otherwise the
# build stops with one line naming the packages).
build-tools:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	[ -f /usr/include/rapidjson/document.h ] || missing="$$missing rapidjson-dev"; \
	[ -f /usr/src/googletest/CMakeLists.txt ] || missing="$$missing googletest"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "not installed:$$missing (apt-get install as root): the ONNX Runtime backend cannot be built"; fi

lint: $(STAMP)  ## ruff check (CI runs it before the tests)
	$(BIN)/ruff check .

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf .cache build model_repository/portable model_repository/native
