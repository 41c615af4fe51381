"""What a worker executes: argv and environment for worker ``index`` (pure, no I/O).

An APP worker is ``python -m fleet.worker APP`` with the WebSocket origins a Bokeh app needs
behind the proxy; a ``--cmd`` worker is ``/bin/sh -c CMD`` with ``{port}`` replaced (``$PORT``
works too, through the environment). Every worker gets ``PORT``, ``FLEET_WORKER_ID`` and
``FLEET_WORKERS``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from fleet.appspec import AppSpec
from fleet.config import Config

_LOOPBACK_OR_ANY = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""}

WORKER_HEAD_HEADROOM = 16 * 1024


@dataclass(frozen=True)
class WorkerCommand:
    argv: tuple[str, ...]
    env: dict[str, str]  # added to fleet's own environment


def worker_host(config: Config) -> str:
    """Where workers listen: loopback behind the built-in proxy; ``--address`` with ``--no-proxy``
    (so an nginx on another host can reach them)."""
    return config.address if config.no_proxy else "127.0.0.1"


def probe_host(config: Config) -> str:
    host = worker_host(config)
    if host in {"0.0.0.0", ""}:
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def websocket_origins(config: Config) -> list[str]:
    """Origins a Bokeh worker accepts: the proxy's public address (or ``--allow-websocket-origin``),
    plus the worker ports themselves for direct access on this machine."""
    if config.allow_websocket_origin:
        origins = list(config.allow_websocket_origin)
    else:
        origins = [f"localhost:{config.port}", f"127.0.0.1:{config.port}"]
        if config.address not in _LOOPBACK_OR_ANY:
            origins.append(f"{config.address}:{config.port}")
    blocks = (0,) if config.no_proxy else (0, 1)
    for block in blocks:
        for index in range(config.workers):
            port = config.worker_port(index, block)
            origins += [f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(origins))


def worker_command(config: Config, spec: AppSpec | None, index: int, workers: int,
                   python: str = sys.executable, *, worker_id: str | None = None,
                   port: int | None = None) -> WorkerCommand:
    """``worker_id`` and ``port`` default to generation 1 in the base block."""
    port = config.worker_port(index) if port is None else port
    env = {
        "PORT": str(port),
        "FLEET_WORKER_ID": worker_id or config.worker_id(index),
        "FLEET_WORKERS": str(workers),
        # Worker output is relayed line by line; a block-buffered Python child would hold it.
        "PYTHONUNBUFFERED": "1",
    }
    if config.cmd:
        return WorkerCommand(("/bin/sh", "-c", config.cmd.replace("{port}", str(port))), env)
    assert config.app is not None and spec is not None
    # The proxy adds forwarding headers to a head it accepted: leave the worker room for them.
    argv = [python, "-m", "fleet.worker", "--address", worker_host(config),
            "--max-header-size", str(config.max_header_size + WORKER_HEAD_HEADROOM),
            "--max-body-size", str(config.max_body_size)]
    if spec.kind.value == "bokeh":
        for origin in websocket_origins(config):
            argv += ["--allow-websocket-origin", origin]
    argv += [spec.path or config.app, "--", *config.app_args]
    return WorkerCommand(tuple(argv), env)
