"""What the master shows outward: its banners and URLs, the front's built-in routes
(``/_fleet/``, the status page, health) and the metrics listener, and the Bokeh static files
the front serves. A mixin of ``runner.Master``, kept apart so the master's own module is about
starting, signals and stopping. It asks the front (``fleet.front.interface.Front``) what it
can do, never which kind it is.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from fleet import __version__, status_page
from fleet.appspec import AppKind, AppSpec, broken_apps
from fleet.config import Config, WorkerSettings
from fleet.discovery import default_name

if TYPE_CHECKING:
    from fleet.control import ControlServer
    from fleet.front.interface import Front
    from fleet.reloading import ConfigReloads
    from fleet.upgrade.handover import Upgrades
    from fleet.supervisor.manager import Supervisor
    from fleet.supervisor.process import Output


class Frontage:
    """The outward-facing part of ``Master`` (its attributes are the master's)."""

    config: Config
    output: "Output"
    spec: AppSpec | None
    specs: tuple[AppSpec, ...]
    front: "Front"
    supervisor: "Supervisor | None"
    control: "ControlServer | None"
    status_board: status_page.StatusBoard | None
    _fleet_routes: dict[str, status_page.Route]
    _metrics_listener: Any
    config_reloads: "ConfigReloads"
    upgrades: "Upgrades"

    if TYPE_CHECKING:
        def slot_of(self, worker_id: str) -> str: ...

    @property
    def worker_settings(self) -> WorkerSettings:
        """The Workers section of the current config: all the control handlers read of it."""
        return self.config.supervisor

    def _add_fleet_routes(self, supervisor: Supervisor) -> None:
        """``/_fleet/`` (the status page, ``status.json``) and ``/_fleet/health/...``: on the
        proxy, and on the ``--metrics-port`` listener (the only place with ``--no-proxy``)."""
        config = self.config
        front = self.front
        # The page links to the proxy only where fleet itself listens (front.port).
        self.status_board = status_page.StatusBoard.of(
            config.supervisor, supervisor, front.stats, config.name or default_name(config.port, os.getpid()),
            None if front.port is None else self.public_url())
        self._fleet_routes = status_page.fleet_routes(self.status_board, supervisor)
        if front.routes:
            for path, (handler, headers) in self._fleet_routes.items():
                front.add_local_route(path, handler, headers)

    def _bokeh_static_roots(self) -> list[Any]:
        """BokehJS under the prefix, and each directory app's ``static/``, for the proxy."""
        from fleet.balancer.static_files import bokeh_roots

        try:
            from bokeh.util.paths import static_path
            bokeh_static: str | None = str(static_path())
        except ImportError:  # the workers will say so; the proxy just forwards /static/
            bokeh_static = None
        apps = [(spec.name, os.path.join(spec.path, "static")) for spec in self.specs
                if spec.path is not None and os.path.isdir(spec.path)]
        return bokeh_roots(self.config.prefix, bokeh_static, apps)

    def _banner(self) -> None:
        config = self.config
        apps = ", ".join(spec.name for spec in self.specs) or config.app
        what = f"--cmd {config.cmd!r}" if config.cmd else f"{apps} ({self.spec.kind.value if self.spec else '?'} app)"
        last = config.worker_port(config.workers - 1)
        ports = f"port {config.base_port}" if config.workers == 1 else f"ports {config.base_port}-{last}"
        if self.front.routes:
            surge = config.surge_base()
            ports += f" (reloads alternate with {surge}-{surge + config.workers - 1})"
        self.output.fleet(f"fleet {__version__} (pid {os.getpid()}): {config.workers} workers of {what} on {ports}")
        for url, problem in broken_apps(self.specs).items():  # none run yet: compiled only
            self.output.fleet(f"Bokeh app {url} is broken ({problem}): it will answer with an empty page")
        for line in self.front.banner():
            self.output.fleet(line)

    def public_url(self) -> str:
        path = self.spec.url_path if self.spec is not None else "/"
        if self.spec is not None and self.spec.kind is AppKind.BOKEH and self.config.prefix:
            path = self.config.prefix + path
        port = self.front.port if self.front.port is not None else self.config.port
        scheme = "https" if self.config.ssl_certfile else "http"
        host = "localhost" if self.config.address in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.config.address
        return f"{scheme}://{host}:{port}{path}"

    def status_url(self) -> str | None:
        """Where ``/_fleet/`` is served: the proxy, else the ``--metrics-port`` listener."""
        if self.front.routes:
            origin = "/".join(self.public_url().split("/", 3)[:3])  # scheme://host:port
            return origin + "/_fleet/"
        if self._metrics_listener is not None:
            host = "localhost" if self.config.address in {"127.0.0.1", "0.0.0.0", "::", "::1"} else self.config.address
            return f"http://{host}:{self._metrics_listener.port}/_fleet/"
        return None

    def _ready_banner(self) -> None:
        if self.front.routes:
            self.output.fleet(f"ready: open {self.public_url()}")
            for spec in self.specs[1:]:
                self.output.fleet(f"also: {self.public_url().rsplit('/', 1)[0]}{spec.url_path}")
            if self.front.redirect_port is not None:
                self.output.fleet(f"http://{self.config.address}:{self.front.redirect_port} redirects to https")
        else:
            self.output.fleet(f"ready (no proxy): workers on {self.config.address}:{self.config.base_port}"
                              f"-{self.config.worker_port(self.config.workers - 1)}")
        status = self.status_url()
        if status is not None:
            self.output.fleet(f"status page: {status}")
        self.output.fleet(f"control socket {self.control.path if self.control else '-'}: "
                          f"fleet status | reload | scale N | down")

    async def _start_metrics(self) -> None:
        """Metrics on the proxy port, or on --metrics-port."""
        config = self.config
        if config.no_metrics:
            return
        from fleet import metrics

        assert self.supervisor is not None
        supervisor = self.supervisor
        registry = metrics.make_registry(self.front.stats,
                                         supervisor.workers, lambda: supervisor.desired,
                                         recycles=lambda: supervisor.recycles, label=self.slot_of,
                                         loop_lags=supervisor.loop_lags,
                                         config_reloads=lambda: self.config_reloads.counts,
                                         upgrades=lambda: self.upgrades.counts)
        acme = getattr(self, "acme", None)  # runner.Master's: --domain
        if acme is not None:
            registry.register(acme.collector())
        if config.metrics_port is not None:
            self._metrics_listener = await metrics.serve_separately(
                registry, config.address, config.metrics_port, config.metrics_path, allow=config.metrics_allow,
                trusted_proxies=config.trusted_proxies(), extra_routes=self._fleet_routes,
                idle_timeout=config.client_timeout)
        elif self.front.routes:
            self.front.add_local_route(config.metrics_path, metrics.metrics_route(registry))

    def _renew_metrics(self, config: Config) -> None:
        """A live reload: --metrics-port's access rules and idle timeout, in place."""
        if self._metrics_listener is not None:
            self._metrics_listener.renew(config.metrics_allow, config.trusted_proxies(), config.client_timeout)

    def _serve_bokeh_static(self) -> None:
        """At start, and once a new generation serves: the front forgets the static files it
        read (a deploy may have changed an app's ``static/``, added one, or upgraded Bokeh) and
        reads them afresh. Not after a failed reload: the old generation, and its files, serve on."""
        if self.spec is not None and self.spec.kind is AppKind.BOKEH:
            self.front.serve_static(self._bokeh_static_roots)


__all__ = ["Frontage"]
