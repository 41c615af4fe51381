"""A Tornado app for the hung-worker and escaped-descendant tests.

  /                     "hello from wN"
  /block?seconds=S      blocks the worker's event loop: ``time.sleep(S)`` inside the handler
  /spawn?arg=A          starts ``setsid sleep A`` (a child that leaves the worker's process
                        group and session) and answers its pid
  /orphan?arg=A         the same, through a shell that exits at once: the sleep is orphaned
  /busy?ms=N            burns N ms of CPU on the loop (load that must not look hung)
"""

from __future__ import annotations

import os
import subprocess
import time

import tornado.web

WORKER = os.environ.get("FLEET_WORKER_ID", "?")


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(f"hello from {WORKER}\n")


class Block(tornado.web.RequestHandler):
    def get(self) -> None:
        print("blocking the event loop", flush=True)  # the test's clock starts at this line
        time.sleep(float(self.get_argument("seconds", "3600")))  # on the event loop, on purpose
        self.write("unblocked\n")


class Spawn(tornado.web.RequestHandler):
    def get(self) -> None:
        child = subprocess.Popen(["setsid", "sleep", self.get_argument("arg")],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.write(f"{child.pid}\n")


class Orphan(tornado.web.RequestHandler):
    def get(self) -> None:
        arg = self.get_argument("arg")
        subprocess.run(["sh", "-c", f"setsid sleep {arg} >/dev/null 2>&1 </dev/null &"], check=True)
        self.write("spawned\n")


class Busy(tornado.web.RequestHandler):
    def get(self) -> None:
        end = time.monotonic() + float(self.get_argument("ms", "5")) / 1000
        while time.monotonic() < end:
            pass
        self.write("done\n")


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/", Hello), (r"/block", Block), (r"/spawn", Spawn), (r"/orphan", Orphan), (r"/busy", Busy),
    ])
