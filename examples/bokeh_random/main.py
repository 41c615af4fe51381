"""A Bokeh app for `fleet up examples/bokeh_random -n 3`: a button adds random points to a plot.

Open http://localhost:5006/bokeh_random. Each click streams five random numbers into the
plot's ``ColumnDataSource`` (``source.stream``), so only the new points travel over the
WebSocket.

Counting sessions (used by fleet's tests): ``app_hooks.py`` prints one line
``session created on g1w1 (total 3)`` to the worker's output each time Bokeh creates a
session, which fleet shows prefixed by the worker (``g1w1:5101 | session created on g1w1 ...``).
Count those lines in fleet's output (or in ``--log-dir`` files) to count sessions per worker.
A page view through fleet's sticky proxy creates exactly one session.

The models carry names (``numbers``, ``add``, ``plot``, ``served_by``) so a browser test can
find them with ``Bokeh.documents[0].get_model_by_name(...)``.
"""

import os
import random

from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Button, ColumnDataSource, Div
from bokeh.plotting import figure

source = ColumnDataSource(data={"x": [], "y": []}, name="numbers")
plot = figure(title="random numbers", height=300, sizing_mode="stretch_width", name="plot")
plot.scatter("x", "y", source=source, size=8)

worker = os.environ.get("FLEET_WORKER_ID", "?")
label = Div(text=f"served by worker {worker} on port {os.environ.get('PORT', '?')}", name="served_by")
button = Button(label="add random numbers", button_type="primary", name="add")


def add_points() -> None:
    start = len(source.data["x"])
    xs = list(range(start, start + 5))
    source.stream({"x": xs, "y": [random.random() for _ in xs]})


button.on_click(add_points)
curdoc().add_root(column(label, button, plot, sizing_mode="stretch_width"))
curdoc().title = "bokeh_random"
