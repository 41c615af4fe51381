"""What a worker executes: argv and environment for worker ``index`` (pure, no I/O).

An APP worker is ``python -m fleet.worker APP... --args ARGS...`` with the WebSocket origins a Bokeh app needs
behind the proxy; a ``--cmd`` worker is ``/bin/sh -c CMD`` with ``{port}`` replaced (``$PORT``
works too, through the environment). Every worker gets ``PORT``, ``FLEET_WORKER_ID`` and
``FLEET_WORKERS``.

A worker's environment is fleet's minus what is fleet's alone (``worker_environment``): the TLS
key password (``FLEET_SSL_PASSWORD``, ``BOKEH_SSL_PASSWORD``: the proxy terminates TLS, a
worker never needs it) and every other ``FLEET_*`` setting. The app's own variables (a
database URL, Bokeh's ``BOKEH_SECRET_KEY``) pass through, and a Bokeh worker gets the secrets
fleet decided for the run (``fleet.bokeh_settings.with_run_secrets``). Secrets never go in argv.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping

from fleet.appspec import AppSpec
from fleet.config.declare import SSL_PASSWORD_ENV
from fleet.config.sections import ProxySettings
from fleet.supervisor.settings import SupervisorViews

_LOOPBACK_OR_ANY = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}

WORKER_HEAD_HEADROOM = 16 * 1024


@dataclass(frozen=True)
class WorkerCommand:
    argv: tuple[str, ...]
    env: dict[str, str]  # added to fleet's environment as ``worker_environment`` filters it


# systemd's notify and watchdog variables are the master's alone (fleet.sdnotify): a worker that
# inherited them could tell systemd the service is ready, or keep a stuck master's watchdog fed.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def worker_environment(parent: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a worker: ``parent`` without fleet's own settings, secrets and
    systemd's notify variables, plus ``extra`` (PORT, FLEET_WORKER_ID, ...)."""
    env = {name: value for name, value in parent.items()
           if not name.startswith("FLEET_") and name not in SSL_PASSWORD_ENV and name not in SYSTEMD_ENV}
    env.update(extra)
    return env


def worker_host(frontend: ProxySettings) -> str:
    """Where workers listen: loopback behind the built-in proxy; ``--address`` with ``--no-proxy``
    (so an nginx on another host can reach them)."""
    return frontend.address if frontend.no_proxy else "127.0.0.1"


def probe_host(frontend: ProxySettings) -> str:
    host = worker_host(frontend)
    if host in {"0.0.0.0", ""}:
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def websocket_origins(views: SupervisorViews) -> list[str]:
    """Origins a Bokeh worker accepts: the proxy's public address (or ``--allow-websocket-origin``),
    plus the worker ports themselves for direct access on this machine."""
    frontend = views.frontend
    if views.trust.allow_websocket_origin:
        origins = list(views.trust.allow_websocket_origin)
    else:
        origins = [f"localhost:{frontend.port}", f"127.0.0.1:{frontend.port}"]
        if frontend.address not in _LOOPBACK_OR_ANY:
            origins.append(f"{frontend.address}:{frontend.port}")
    blocks = (0,) if frontend.no_proxy else (0, 1)
    for block in blocks:
        for index in range(views.workers.workers):
            port = views.worker_port(index, block)
            origins += [f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(origins))


def worker_command(views: SupervisorViews, spec: AppSpec | None, index: int, workers: int,
                   python: str = sys.executable, *, worker_id: str | None = None,
                   port: int | None = None) -> WorkerCommand:
    """``worker_id`` and ``port`` default to generation 1 in the base block."""
    what, limits = views.workers, views.limits
    port = views.worker_port(index) if port is None else port
    env = {
        "PORT": str(port),
        "FLEET_WORKER_ID": worker_id or views.worker_id(index),
        "FLEET_WORKERS": str(workers),
        **({"FLEET_HOST_ID": what.host_id} if what.host_id else {}),
        # Worker output is relayed line by line; a block-buffered Python child would hold it.
        "PYTHONUNBUFFERED": "1",
    }
    if what.cmd:
        return WorkerCommand(("/bin/sh", "-c", what.cmd.replace("{port}", str(port))), env)
    assert what.app is not None and spec is not None
    # The proxy adds forwarding headers to a head it accepted: leave the worker room for them.
    argv = [python, "-m", "fleet.worker", "--address", worker_host(views.frontend),
            "--max-header-size", str(limits.max_header_size + WORKER_HEAD_HEADROOM),
            "--max-body-size", str(limits.max_body_size)]
    for network in views.trust.trusted_proxies():
        argv += ["--trusted-proxy", network]
    if spec.kind.value == "bokeh":
        from fleet.bokeh_settings import app_paths, worker_settings

        for origin in websocket_origins(views):
            argv += ["--allow-websocket-origin", origin]
        argv += ["--bokeh-settings", worker_settings(views.bokeh)]
        env.update(views.bokeh.bokeh_environment)  # secrets: environment only, never argv
        apps = [os.path.abspath(path) for path in app_paths(what, views.bokeh)]
    else:
        apps = [spec.path or what.app]
    argv += [*apps, "--args", *what.app_args]
    return WorkerCommand(tuple(argv), env)
