"""Bokeh's documented request-arguments pattern: the app reads ``session_context.request.arguments``
at module level (so it can only run once a session exists) and shows ``N=<value>``."""

from bokeh.io import curdoc
from bokeh.models import Div

arguments = curdoc().session_context.request.arguments
value = arguments.get("N", [b"unset"])[0].decode()
curdoc().add_root(Div(text=f"N={value}", name="shown"))
