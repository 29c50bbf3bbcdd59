# Two commands for a fresh clone:  `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# a local copy of the corpora beside the checkout is used when present; otherwise they are downloaded
ifneq ($(wildcard ../shared/data),)
export PICOLLM_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray,xlstm,tensorboard,optuna,playground]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/picollm pipeline --fast

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python bench/throughput.py

clean:
	rm -rf checkpoints analysis_runs logs
