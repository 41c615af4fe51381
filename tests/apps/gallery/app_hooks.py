"""Bokeh lifecycle hooks: one line per worker when the server loads the app."""

import os
import sys


def on_server_loaded(server_context) -> None:  # noqa: ANN001 - Bokeh's ServerContext
    print(f"gallery hooks loaded on {os.environ.get('FLEET_WORKER_ID', '?')}")
    sys.stdout.flush()
