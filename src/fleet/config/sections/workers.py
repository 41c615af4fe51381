"""The Workers section of fleet's settings.

What runs and how the supervisor runs it: the APP or --cmd, how many workers, their two port
blocks, how a reload batches and drains them, and how long a worker may take to start, to stop
and to answer its liveness check. Read by the supervisor (``config.supervisor``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import PROXY, option
from fleet.cpulimit import default_workers  # the cgroup's CPU quota in a container
from fleet.rules import valid_host_id
from fleet.values import parse_duration, parse_port, parse_positive_int, parse_text, parse_url_path


def parse_host_id(value: str) -> str:
    return valid_host_id(str(value))


@dataclass(frozen=True)
class WorkerSettings:
    """The Workers section (``config.supervisor``); frozen."""

    # What to run (positional arguments of ``up``/``config``, not options).
    app: str | None = None
    extra_apps: tuple[str, ...] = ()  # `fleet up a.py b/ c.ipynb`: b/ and c.ipynb (Bokeh apps only)
    app_args: tuple[str, ...] = ()  # after --args (or the older --), for every app
    cmd: str | None = option(
        None, "--cmd", parse=parse_text, metavar="'CMD {port}'",
        help="Run any server command instead of APP; {port} and $PORT give each worker its port.",
    )
    workers: int = option(
        None, "-n", "--workers", parse=parse_positive_int, default_factory=default_workers,
        show_default="CPU count, or the container's CPU limit", help="Number of worker processes.",
    )
    base_port: int = option(
        5100, "--base-port", parse=parse_port,
        help="Port of worker 0 of the first generation; worker i listens on base-port + i.",
    )
    surge_base_port: int | None = option(
        None, "--surge-base-port", parse=parse_port,
        show_default="base-port + max(100, workers), moved past --port",
        help="The second port block: generations alternate between --base-port and this "
             "(a reload starts the new workers here while the old ones drain). Unused with "
             "--no-proxy, which restarts workers one at a time on the same ports.",
    )
    reload_batch: int = option(
        1, "--reload-batch", parse=parse_positive_int,
        help="How many new workers a reload starts at a time (each start imports the app). The "
             "old generation serves meanwhile and drains once all are ready: while it drains, a "
             "reload costs up to one more worker's memory per worker.",
    )
    drain_timeout: float = option(
        3600.0, "--drain-timeout", parse=parse_duration, metavar="SECONDS",
        help="How long a replaced worker keeps serving its in-flight requests and open "
             "WebSockets before SIGTERM (0: at once).",
    )
    health_path: str | None = option(
        None, "--health-path", parse=parse_url_path, commands=PROXY,
        show_default="none: a TCP connect is the readiness probe",
        help="Readiness probe: a GET of this path must answer 2xx.",
    )
    start_timeout: float = option(
        60.0, "--start-timeout", parse=parse_duration, metavar="SECONDS",
        help="A worker not ready within this time is restarted.",
    )
    graceful_timeout: float = option(
        30.0, "--graceful-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="On stop/reload, how long in-flight requests may take before workers are killed.",
    )
    worker_timeout: float = option(
        60.0, "--worker-timeout", parse=parse_duration, metavar="SECONDS",
        help="Kill and replace a ready worker whose event loop is blocked longer than this "
             "(0: off). APP workers prove it from inside their loop; --cmd workers only through "
             "--health-path (a 2xx within the timeout); a --cmd worker without --health-path "
             "has no hang detection.",
    )
    host_id: str | None = option(
        None, "--host-id", parse=parse_host_id, metavar="ID",
        show_default="none: ids name the worker only",
        help="This host's id when several fleets stand behind `fleet balance`: Bokeh session ids "
             "and the affinity cookie name the host and the worker (ID~WORKER), so the front "
             "tier sends a session to its host. A DNS label (no '.'), e.g. the pod name.",
    )


    def apps(self) -> tuple[str, ...]:
        """Every APP as typed (patterns with --glob; see ``fleet.bokeh_settings.app_paths``)."""
        return (self.app, *self.extra_apps) if self.app else ()


__all__ = ["WorkerSettings"]
