"""Serve the loaded app on ``PORT`` until SIGTERM; exit ``BOOT_ERROR`` if it cannot load.

Tornado apps listen on ``--address:PORT``; Bokeh apps run in a ``bokeh.server.server.Server``
at ``[prefix]/<name>`` (``fleet.worker.bokeh``: bokeh serve's options, several apps) with the
WebSocket origins the supervisor passes (the proxy's public address),
and both honour ``X-Forwarded-*`` / ``X-Real-IP`` / ``X-Scheme``, but only from fleet's own proxy
(loopback) and ``--trusted-proxy`` peers (``fleet.worker.guard``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import traceback
from typing import Callable

from fleet.appspec import AppError, AppKind, detect
from fleet.supervisor.policy import BOOT_ERROR
from fleet.worker.heartbeat import Heartbeat


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``[options] APP... [--args ARGS...]``: everything after ``--args`` goes to the app(s)."""
    own, app_args = (argv[:argv.index("--args")], argv[argv.index("--args") + 1:]) \
        if "--args" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m fleet.worker", description=__doc__)
    parser.add_argument("apps", nargs="+", metavar="APP",
                        help="the APP(s) given to `fleet up` (several only for Bokeh apps)")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--allow-websocket-origin", action="append", default=[],
                        help="Bokeh: allowed WebSocket origin HOST[:PORT] (repeatable)")
    parser.add_argument("--trusted-proxy", action="append", default=[],
                        help="CIDR besides 127.0.0.1/::1 whose X-headers are honoured (repeatable)")
    parser.add_argument("--max-header-size", type=int, default=None,
                        help="largest request head the HTTP server accepts (bytes)")
    parser.add_argument("--max-body-size", type=int, default=None,
                        help="largest request body the HTTP server accepts (bytes)")
    parser.add_argument("--bokeh-settings", default="{}",
                        help="Bokeh: bokeh serve's options as JSON (fleet.bokeh_settings); no secrets")
    args = parser.parse_args(own)
    args.app_args = app_args
    args.app = args.apps[0]
    return args


def _http_server_options(args: argparse.Namespace) -> dict[str, int]:
    """Tornado's own limits (64 KiB heads, 100 MB bodies) must not be stricter than the
    proxy's, or a request the proxy accepts would be dropped by the worker."""
    options = {}
    if args.max_header_size:
        options["max_header_size"] = args.max_header_size
    if args.max_body_size:
        options["max_body_size"] = args.max_body_size
    return options


def _boot_error(message: str) -> int:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    return BOOT_ERROR


async def _serve(args: argparse.Namespace, port: int, heartbeat: Heartbeat | None = None) -> int:
    from fleet.worker import guard
    from fleet.worker.load import LoadError, load_tornado

    guard.install(args.trusted_proxy)

    try:
        spec = detect(args.app)
    except AppError as exc:
        return _boot_error(f"fleet.worker: {exc}")
    try:
        if spec.kind is AppKind.BOKEH:
            from fleet.worker.bokeh import build_server, parse_settings

            server = build_server(
                list(args.apps), list(args.app_args), parse_settings(args.bokeh_settings),
                port=port, address=args.address, origins=list(args.allow_websocket_origin),
                http_server_kwargs=_http_server_options(args),
                worker_id=os.environ.get("FLEET_WORKER_ID"), host_id=os.environ.get("FLEET_HOST_ID"),
            )
            server.start()
            stop_server: Callable[[], None] = server.stop
        else:
            import tornado.httpserver

            sys.argv = [spec.path or spec.module or args.app, *args.app_args]
            application = load_tornado(spec)
            http_server = tornado.httpserver.HTTPServer(application, xheaders=True,
                                                        **_http_server_options(args))
            http_server.listen(port, args.address)
            stop_server = http_server.stop
    except LoadError as exc:
        return _boot_error(f"fleet.worker: {exc}")
    except OSError as exc:
        # Binding failed (port taken between the supervisor's check and now): not a boot
        # error of the app, so the supervisor retries it with backoff.
        sys.stderr.write(f"fleet.worker: cannot listen on {args.address}:{port}: {exc.strerror}\n")
        return 1
    except BaseException:  # noqa: BLE001 - any exception from user code is a boot error
        return _boot_error(traceback.format_exc())

    # --worker-timeout: beat from inside this loop; a blocked loop stops beating.
    if heartbeat is not None:
        heartbeat.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The supervisor sends TERM after the proxy drained this worker; stop listening and exit 0
    # so the exit is told apart from a crash. INT comes only from a user poking the worker.
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    await stopped.wait()
    if heartbeat is not None:
        heartbeat.stop()
    stop_server()
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        port = int(os.environ["PORT"])
    except (KeyError, ValueError):
        return _boot_error("fleet.worker: PORT must be set to the port to listen on")
    # Taken before the app loads: its subprocesses must not inherit the heartbeat.
    heartbeat = Heartbeat.from_environ()
    return asyncio.run(_serve(args, port, heartbeat))
