# `make test` and `make demo` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Until `mgkd tune` lands: one MAS+KD distillation on the embedded digits data (teacher trained
# and cached on first use). Re-running starts the demo afresh.
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/mgkd train --config examples/digits-mas-kd.yaml --out runs/demo

bench: $(STAMP)
	$(BIN)/python bench/step.py

clean:
	rm -rf $(VENV) .pytest_cache
