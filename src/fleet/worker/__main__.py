"""Entry point of ``python -m fleet.worker``."""

import sys

from fleet.worker.serve import main

sys.exit(main(sys.argv[1:]))
