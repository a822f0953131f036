# `make test` and `make demo` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install test test-fast demo bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $(STAMP)

install: $(STAMP)

# The tests also need requirements-dev.txt (MLflow for the trackers' end-to-end test; about 15 s).
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(DEV_STAMP)

# Every test (what CI runs): about 7 minutes of pytest on 2 idle cores (the install before it: about 2 more).
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The inner loop: no Ray, no second process, no single slow test (the tiers are set in
# tests/conftest.py); about 2 minutes on 2 idle cores.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not cli and not slow" $(PYTEST_ARGS)

# The built-in sweep (sweeps/demo.yaml) on the embedded digits data: two pairs, mode mas, teachers
# and head banks prepared automatically. Re-running starts the demo afresh.
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/mgkd tune

bench: $(STAMP)
	$(BIN)/python bench/step.py
	$(BIN)/python bench/tune_overhead.py
	$(BIN)/python bench/gpu.py  # says it skipped when no CUDA GPU is visible

clean:
	rm -rf $(VENV) .pytest_cache
