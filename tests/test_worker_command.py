"""What the supervisor executes for a worker: argv, environment, WebSocket origins (pure)."""

from __future__ import annotations

import sys

from fleet.appspec import detect
from fleet.config import Config
from fleet.supervisor.command import websocket_origins, worker_command, worker_host
from fleet.supervisor.settings import SupervisorViews
from support import EXAMPLES


def test_cmd_worker_runs_through_sh_with_port_substituted_and_env() -> None:
    config = Config(cmd="python -m http.server {port}", workers=3, base_port=7000)
    command = worker_command(SupervisorViews.of(config), None, 2, 3)
    assert command.argv == ("/bin/sh", "-c", "python -m http.server 7002")
    assert command.env["PORT"] == "7002"
    assert command.env["FLEET_WORKER_ID"] == "g1w2"
    assert command.env["FLEET_WORKERS"] == "3"


def test_app_worker_runs_fleet_worker_with_app_args() -> None:
    app = str(EXAMPLES / "tornado_hello.py")
    config = Config(app=app, app_args=("--flag", "x"), workers=1)
    command = worker_command(SupervisorViews.of(config), detect(app), 0, 1)
    assert command.argv[:3] == (sys.executable, "-m", "fleet.worker")
    assert command.argv[-4:] == (app, "--args", "--flag", "x")
    assert "--allow-websocket-origin" not in command.argv  # only Bokeh apps need origins


def test_bokeh_worker_allows_the_proxy_address_and_the_worker_ports() -> None:
    app = str(EXAMPLES / "bokeh_random")
    config = Config(app=app, workers=2, port=6000, base_port=7000)
    argv = worker_command(SupervisorViews.of(config), detect(app), 1, 2).argv
    origins = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--allow-websocket-origin"]
    assert origins[:2] == ["localhost:6000", "127.0.0.1:6000"]
    assert "localhost:7001" in origins and "127.0.0.1:7000" in origins


def test_explicit_origins_replace_the_default_and_a_public_address_is_added() -> None:
    config = Config(app="x", workers=1, port=80, allow_websocket_origin=("example.com",))
    assert websocket_origins(SupervisorViews.of(config))[0] == "example.com"
    assert "localhost:80" not in websocket_origins(SupervisorViews.of(config))
    public = Config(app="x", workers=1, port=80, address="10.0.0.5")
    assert "10.0.0.5:80" in websocket_origins(SupervisorViews.of(public))


def test_workers_listen_on_loopback_behind_the_proxy_and_on_address_without_it() -> None:
    assert worker_host(Config(app="x", address="0.0.0.0").frontend) == "127.0.0.1"
    assert worker_host(Config(app="x", address="0.0.0.0", no_proxy=True).frontend) == "0.0.0.0"
