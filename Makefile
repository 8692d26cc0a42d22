# wirespeed: every target installs what it needs into .venv first.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.wirespeed-installed
# pytest-xdist workers; the Verilator builds dominate and use one core each.
JOBS     ?= 2
PYTEST_ARGS ?=

.PHONY: all demo test bench venv clean regs

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,pynq]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/wirespeed demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/wirespeed bench

# Every export into build/regs, and the committed register reference into docs/ (drift-checked by the tests).
regs: $(STAMP)
	$(BIN)/wirespeed regs --format all --out build/regs
	$(BIN)/wirespeed regs --format markdown --out docs

clean:
	rm -rf build .pytest_cache
