"""A Bokeh app with a module-level side effect: each run appends one line (the session id and
the worker) to the file named by its first argument (``fleet up side_effect.py --args FILE``)."""

import os
import sys

from bokeh.io import curdoc
from bokeh.models import Div

doc = curdoc()
with open(sys.argv[1], "a", encoding="utf-8") as runs:
    runs.write(f"{doc.session_context.id} {os.environ.get('FLEET_WORKER_ID', '-')}\n")
doc.add_root(Div(text=f"session {doc.session_context.id}", name="shown"))
