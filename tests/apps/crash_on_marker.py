"""A worker app that starts fine, until a marker file tells one worker to fail at start.

While a file ``crash-<FLEET_WORKER_ID>`` exists in the worker's working directory (fleet's
current directory), importing this app exits with status 1: the way a bad deploy or a missing
secret makes an app die at every start. fleet treats a failure at its own first start as a
boot error and stops, so a drill starts the fleet without the marker, creates it, kills the
worker, and watches the restarts back off; removing the marker lets the worker recover.

  /    "hello from wN on port P"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tornado.web

WORKER = os.environ.get("FLEET_WORKER_ID", "?")
PORT = os.environ.get("PORT", "?")

if (Path.cwd() / f"crash-{WORKER}").exists():
    sys.exit(1)


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(f"hello from {WORKER} on port {PORT}\n")


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/", Hello)])
