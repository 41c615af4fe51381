"""Make tests/support.py importable as ``support`` from every test module and subfolder, and let
the suite run on several pytest-xdist workers at once (the Makefile's PYTEST_ARGS: ``-n 3
--dist loadfile``) without two tests seeing each other:

- every test process (each xdist worker, or the one pytest) gets a private, empty
  ``XDG_RUNTIME_DIR``, and every test a fresh one of its own: the control sockets of the fleets
  it starts, and what ``fleet ls`` or a selector-less ``fleet status`` sees, are its own (never
  another worker's fleets, never a developer's);
- a test module runs on one worker, in its order (``--dist loadfile``): a module-scoped fleet
  starts once, and tests that share one see it in the state the module left it;
- the modules with the most ``slow`` seconds are handed out first (``slow(seconds=N)`` for
  the longest tests), so that none of them starts last and keeps the whole run waiting.

Not ``--dist loadgroup``: with pytest 9.2 its ``xdist_group`` marks are silently ignored
(pytest-xdist issue 1386; xdist renames the test's ``_nodeid``, which pytest no longer reads).
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

_PROCESS_RUNTIME: list[str] = []
_BASETEMP = pytest.StashKey[str]()
_MEASURED: list[str] = []  # lines the browser tests report (tests/browser/conftest.py)
# What a test marked slow takes, for the order above, unless it says (slow(seconds=N)).
SLOW_SECONDS = 15


def _private_dir(prefix: str) -> str:
    """A new 0700 directory with a short path (a control socket path has at most 107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput") \
            and not config.option.basetemp:
        # xdist puts each worker's tmp_path one level deeper (popen-gwN/); a short base keeps
        # the sockets fleet makes there within the kernel's and HAProxy's path limits (97 bytes
        # for HAProxy's unix@ server lines).
        config.option.basetemp = _private_dir("fleet-pt-")
        config.stash[_BASETEMP] = config.option.basetemp
    # Before any fixture: module-scoped fleets of this process use this one.
    path = _private_dir(f"fleet-run-{os.getpid()}-")
    _PROCESS_RUNTIME.append(path)
    os.environ["XDG_RUNTIME_DIR"] = path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _PROCESS_RUNTIME:
        shutil.rmtree(_PROCESS_RUNTIME.pop(), ignore_errors=True)
    basetemp = session.config.stash.get(_BASETEMP, None)
    if basetemp and exitstatus == 0:  # kept after a failure, for its files
        shutil.rmtree(basetemp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test its own XDG_RUNTIME_DIR, inherited by every fleet command it starts."""
    path = _private_dir("fleet-t-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


# `make smoke PY=...` (and .ci/run on the Pythons the whole suite does not run on): start, the
# proxy, a reload, a Bokeh page in Chromium, and the compiled hot path. A module or a test.
SMOKE = frozenset({
    "tests/test_speedups.py",
    "tests/test_up_workers.py::test_tornado_workers_answer_on_their_ports_and_sigterm_exits_0_leaving_nothing",
    "tests/test_up_proxy.py::test_tornado_app_through_the_proxy_reaches_every_worker",
    "tests/test_up_proxy.py::test_bokeh_app_through_the_proxy",
    "tests/test_up_proxy.py::test_reload_fails_no_request",
    "tests/browser/test_bokeh_random.py::test_three_browsers_at_once_each_plot_their_own_points",
})
# The pure-Python path reruns five proxy modules (minutes): the whole suite covers it, and it is
# the same code on every Python.
NOT_SMOKE = frozenset({"tests/test_speedups.py::test_the_proxy_tests_pass_on_the_pure_python_path"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        test = item.nodeid.split("[", 1)[0]
        if (test in SMOKE or test.split("::", 1)[0] in SMOKE) and test not in NOT_SMOKE:
            item.add_marker(pytest.mark.smoke)
    if not hasattr(config, "workerinput"):
        return  # one process: the order does not change the time
    # Every worker sorts the same way, so they agree on the collection xdist hands out; with
    # --no-loadscope-reorder, xdist hands out modules in this order. The sort is stable: a
    # module's tests keep their order.
    slow: collections.Counter[str] = collections.Counter()
    for item in items:
        mark = item.get_closest_marker("slow")
        if mark is not None:
            slow[item.nodeid.split("::", 1)[0]] += mark.kwargs.get("seconds", SLOW_SECONDS)
    items.sort(key=lambda item: -slow[item.nodeid.split("::", 1)[0]])


# Here, not in tests/browser/conftest.py: under xdist the controlling process, which writes the
# summary, never loads that file (it collects nothing).
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # the last report of a test holds every line it added
        _MEASURED.extend(value for name, value in report.user_properties if name == "measured")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MEASURED:
        terminalreporter.section("measured in the browser")
        for line in _MEASURED:
            terminalreporter.write_line(line)
