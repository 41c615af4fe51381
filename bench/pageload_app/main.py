"""The dashboard bench/pageload.py times: a slider, a plot and a table.

The widgets need ``bokeh-widgets`` and ``bokeh-tables`` on top of ``bokeh.min.js``, the WebGL
plot and its LaTeX axis label ``bokeh-gl`` and ``bokeh-mathjax`` (``bokeh serve`` and fleet send
all five to every page anyway), so the page weighs, and paints, what a real dashboard does. The plot is named ``plot`` so the bench can wait for its
view to finish painting; the slider streams new values over the WebSocket like a user would.
"""

import math

from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Slider, TableColumn, TeX
from bokeh.plotting import figure

POINTS = 200


def wave(frequency: float) -> dict[str, list[float]]:
    xs = [i / 20 for i in range(POINTS)]
    return {"x": xs, "y": [math.sin(frequency * x) for x in xs]}


source = ColumnDataSource(data=wave(1.0), name="wave")
plot = figure(title="a sine wave", height=300, sizing_mode="stretch_width", output_backend="webgl",
              name="plot")
plot.yaxis.axis_label = TeX(r"\sin(f x)")
plot.line("x", "y", source=source, line_width=2)
slider = Slider(start=0.1, end=5.0, value=1.0, step=0.1, title="frequency", name="frequency")
table = DataTable(source=source, columns=[TableColumn(field="x"), TableColumn(field="y")],
                  height=200, sizing_mode="stretch_width", name="table")
slider.on_change("value", lambda _attr, _old, new: source.data.update(wave(new)))
curdoc().add_root(column(slider, plot, table, sizing_mode="stretch_width"))
curdoc().title = "pageload"
