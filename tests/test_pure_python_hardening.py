"""The proxy's hardening tests once more without the compiled hot path (``FLEET_PURE_PYTHON=1``).

A module of its own, apart from ``test_speedups``'s other pure-Python run, so that two test
workers run the two halves at the same time: together they are the longest test of the suite.
"""

from __future__ import annotations

import os

import pytest

from support import run_without_the_compiled_path


@pytest.mark.slow(seconds=100)
@pytest.mark.skipif(os.environ.get("FLEET_PURE_PYTHON") == "1", reason="this run is the pure-Python one already")
def test_the_hardening_tests_pass_on_the_pure_python_path() -> None:
    run_without_the_compiled_path("tests/test_balancer_hardening.py")
