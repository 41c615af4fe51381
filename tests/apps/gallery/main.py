"""A Bokeh directory app for fleet's tests: static/, templates/, theme.yaml and app_hooks.py.

Shows the arguments it got (``--args``) and the user Bokeh's auth module found, if any.
"""

import os
import sys

from bokeh.io import curdoc
from bokeh.models import Div

request = curdoc().session_context.request if curdoc().session_context else None
user = request.cookies.get("user", "-") if request is not None else "-"
curdoc().add_root(Div(text=f"argv={sys.argv[1:]} worker={os.environ.get('FLEET_WORKER_ID')} user={user}",
                      name="about"))
curdoc().title = "gallery"
print(f"gallery argv={sys.argv[1:]}", flush=True)
