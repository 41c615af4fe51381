"""Which hot path the proxy runs, said once in the start banner of ``fleet up`` and ``fleet
balance``: the compiled one (``balancer._speedups``) or pure Python, and why."""

from __future__ import annotations

import os


def hot_path_line() -> str:
    """Which hot path the proxy runs (``balancer.head.HOT_PATH``), and why when it is the slow one."""
    from fleet.balancer.head import HOT_PATH

    if HOT_PATH == "compiled":
        return "proxy hot path: compiled (fleet.balancer._speedups)"
    why = ("FLEET_PURE_PYTHON=1" if os.environ.get("FLEET_PURE_PYTHON") == "1"
           else "the C module was not built: install gcc and python3-dev, then reinstall fleet")
    return f"proxy hot path: pure Python ({why})"


__all__ = ["hot_path_line"]
