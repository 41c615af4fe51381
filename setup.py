"""The optional C part of fleet (``fleet.balancer._speedups``); everything else is in pyproject.toml.

``optional=True``: where no C compiler or Python headers exist, the build warns and fleet is
installed without it, running the same code in pure Python (``FLEET_PURE_PYTHON=1`` forces that).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fleet.balancer._speedups", ["src/fleet/balancer/_speedups.c"], optional=True)])
