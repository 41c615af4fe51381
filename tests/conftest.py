"""Make tests/support.py importable as ``support`` from every test module and subfolder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
