"""Make tests/support.py importable as ``support`` from every test module and subfolder, and let
the suite run on several pytest-xdist workers at once (pyproject's addopts: ``-n 3 --dist
loadgroup``) without two tests seeing each other:

- every test process (each xdist worker, or the one pytest) gets a private, empty
  ``XDG_RUNTIME_DIR``, and every test a fresh one of its own: the control sockets of the fleets
  it starts, and what ``fleet ls`` or a selector-less ``fleet status`` sees, are its own (never
  another worker's fleets, never a developer's);
- a module whose fixtures outlive one test (a module-scoped fleet) runs on one worker, so that
  fleet starts once, not once per worker;
- ``@pytest.mark.xdist_group("timing")`` tests (CPU-timing sensitive checks) run on one worker,
  one after another.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

_PROCESS_RUNTIME: list[str] = []
_SHARED_SCOPES = {"module", "package", "session"}


def _private_dir(prefix: str) -> str:
    """A new 0700 directory with a short path (a control socket path has at most 107 bytes)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def pytest_configure(config: pytest.Config) -> None:
    # Before any fixture: module-scoped fleets of this process use this one.
    path = _private_dir("fleet-run-")
    _PROCESS_RUNTIME.append(path)
    os.environ["XDG_RUNTIME_DIR"] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    while _PROCESS_RUNTIME:
        shutil.rmtree(_PROCESS_RUNTIME.pop(), ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test its own XDG_RUNTIME_DIR, inherited by every fleet command it starts."""
    path = _private_dir("fleet-t-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _shares_fixtures(item: pytest.Item) -> bool:
    """Does ``item`` use a fixture of its module (or wider) that the suite defines itself?"""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for definitions in info.name2fixturedefs.values():
        for definition in definitions:
            if definition.scope in _SHARED_SCOPES and definition.baseid:  # baseid "": pytest's own
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
