"""A Bokeh app with a module-level side effect: each run appends one line (the session id and
the worker) to ``runs.txt`` next to this file."""

import os

from bokeh.io import curdoc
from bokeh.models import Div

doc = curdoc()
with open(os.path.join(os.path.dirname(__file__), "runs.txt"), "a", encoding="utf-8") as runs:
    runs.write(f"{doc.session_context.id} {os.environ.get('FLEET_WORKER_ID', '-')}\n")
doc.add_root(Div(text=f"session {doc.session_context.id}", name="shown"))
