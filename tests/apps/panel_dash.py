"""Two Panel apps from one module, as ``pn.serve(APPS)`` would serve them: ``fleet up
panel_dash.py`` serves ``/hello`` and ``/notes`` (and Panel's index of them at ``/``)."""

import os

import panel as pn


def hello() -> pn.viewable.Viewable:
    # A function: called once per session, as pn.serve calls it.
    worker = os.environ.get("FLEET_WORKER_ID", "?")
    print(f"hello session on {worker}", flush=True)
    return pn.pane.Markdown(f"hello from {worker}")


APPS = {"hello": hello, "notes": "# notes in markdown"}

if __name__ == "__main__":  # `python panel_dash.py` still works; fleet imports the module
    pn.serve(APPS)
