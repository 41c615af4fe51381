"""Bokeh lifecycle hooks of the bokeh_random example: count sessions per worker.

Prints ``session created on <worker> (total N)`` once per new session, so tests (and people)
can count sessions from the worker's output.
"""

import os
import sys

sessions_created = 0


def on_session_created(session_context) -> None:  # noqa: ANN001 - Bokeh's SessionContext
    global sessions_created
    sessions_created += 1
    print(f"session created on {os.environ.get('FLEET_WORKER_ID', '?')} (total {sessions_created})")
    sys.stdout.flush()
