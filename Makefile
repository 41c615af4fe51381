# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP ?= examples/bokeh_random
WORKERS ?= 3
# The suite mostly waits on subprocesses: three xdist workers on two cores, a test module to one
# worker, the modules with the most slow tests first (tests/conftest.py).
PYTEST_ARGS ?= -n 4 --dist loadfile --no-loadscope-reorder

.PHONY: run test venv clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

run: venv
	$(BIN)/pip install -q -e '.[bokeh]'
	$(BIN)/fleet up $(APP) -n $(WORKERS)

test: venv
	$(BIN)/pip install -q -e '.[test,bokeh]'
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache src/fleet/balancer/_speedups*.so
