"""A Panel app with a widget: a slider whose value the server writes back into the page.

Each run (one per session, as under ``panel serve``) prints ``session created on <worker>
<session id>``, which the browser tests count per worker. The slider's Bokeh model is titled ``n``; the
Markdown pane shows ``value N`` once the server has seen the slider move.
"""

import os

import panel as pn

worker = os.environ.get("FLEET_WORKER_ID", "?")
print(f"session created on {worker} {pn.state.curdoc.session_context.id}", flush=True)
slider = pn.widgets.IntSlider(name="n", start=0, end=20, value=3)
shown = pn.pane.Markdown(pn.bind(lambda n: f"value {n}", slider))
pn.Column(slider, shown, pn.pane.Markdown(f"served by worker {worker}")).servable(title="panel slider")
