"""``DataPlane``: nginx or HAProxy run by fleet (``--proxy nginx|haproxy``); the master sees
it through ``fleet.front.managed``. Worker changes in (``on_worker``), ``wait_idle`` for
drains, ``add_local_route`` for fleet's own routes, and start/stop.

Order (each failure leaves nothing running): ``prepare`` (binary, refused options, private
directory, port free, ``nginx -t`` / ``haproxy -c`` of a rendered configuration) before any
worker starts; ``start`` once the workers are ready; ``stop`` before the workers stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterable

from fleet.config import Config
from fleet.dataplane import process
from fleet.dataplane.files import DataPlaneError, Layout, Renderer, make_private, private_directory
from fleet.dataplane.haproxy import HAProxySync, RuntimeAPI
from fleet.dataplane.internal import Handler, InternalRoutes
from fleet.dataplane.model import PlaneModel, downgrades, refusals
from fleet.dataplane.nginx import NginxSync
from fleet.ports import PortInUseError, check_free
from fleet.supervisor.info import WorkerInfo
from fleet.supervisor.process import Output


class DataPlane:
    def __init__(self, config: Config, layout: Layout, binary: str, output: Output, *,
                 idle_close_on_response: bool = False) -> None:
        self.config = config
        self.kind = layout.kind
        self.layout = layout
        self.binary = binary
        self.output = output
        self.idle_close_on_response = idle_close_on_response
        self.model = PlaneModel(config)
        self.renderer = self._renderer(config)
        self.routes = InternalRoutes()
        self.server: process.ServerProcess | None = None
        self.sync: HAProxySync | NginxSync | None = None
        self.stopped_server: process.ServerProcess | None = None

    @classmethod
    async def prepare(cls, config: Config, control_path: str, output: Output) -> "DataPlane":
        """Everything that can be checked before a worker runs; DataPlaneError if it fails."""
        kind = config.proxy
        errors = refusals(config)
        if config.port == 0:
            errors.append(f"--proxy {kind} needs a fixed --port (not 0)")
        if errors:
            raise DataPlaneError("\n".join(errors))
        binary = process.find_binary(kind)
        layout = Layout(kind, private_directory(control_path))
        layout.check_lengths()
        for note in downgrades(config):
            output.fleet(f"warning: {note}")
        try:
            check_free(config.address, config.port, what="proxy port")
        except PortInUseError as exc:
            raise DataPlaneError(f"--proxy {kind}: {exc}") from None
        make_private(layout.directory)
        # HAProxy 2.6+ can answer an idle keep-alive client once more across a reload.
        idle_close = kind == "haproxy" and await process.haproxy_version(binary) >= (2, 6)
        plane = cls(config, layout, binary, output, idle_close_on_response=idle_close)
        try:
            # The first generation's slots, as they will be once ready: what nginx -t must accept.
            for index in range(config.workers):
                slot = f"w{index}"
                plane.model.update(f"check{index}", slot, "ready")
            plane.renderer.write(plane.model)
            await process.check(kind, binary, layout)
            plane.model = PlaneModel(config)
            plane.renderer.write(plane.model)
        except BaseException:
            plane.remove_files()
            raise
        return plane

    @classmethod
    async def check_offline(cls, config: Config) -> str | None:
        """``fleet check --proxy nginx|haproxy``: why the server would reject the configuration
        fleet would give it (refused options, ``nginx -t``, ``haproxy -c``), or None. In a
        temporary private directory; nothing else is touched."""
        errors = refusals(config)
        if errors:
            return "\n".join(errors)
        try:
            binary = process.find_binary(config.proxy)
            with tempfile.TemporaryDirectory(prefix="fleet-check-") as directory:
                layout = Layout(config.proxy, os.path.join(directory, "plane"))
                make_private(layout.directory)
                idle_close = config.proxy == "haproxy" and await process.haproxy_version(binary) >= (2, 6)
                plane = cls(config, layout, binary, Output(), idle_close_on_response=idle_close)
                for index in range(config.workers):
                    plane.model.update(f"check{index}", f"w{index}", "ready")
                plane.renderer.write(plane.model)
                await process.check(config.proxy, binary, layout)
        except DataPlaneError as exc:
            return str(exc)
        return None

    def check_scale(self, workers: int) -> str | None:
        """Why ``fleet scale workers`` cannot be followed, or None."""
        if self.kind == "haproxy" and workers > self.model.capacity:
            return (f"--proxy haproxy was started with {self.model.capacity} server slots per port "
                    f"block; scaling to {workers} needs a restart of fleet with a larger -n")
        return None

    # -- worker changes ------------------------------------------------------------------------
    def on_worker(self, info: WorkerInfo) -> None:
        if self.model.update(info.id, info.slot, info.state) and self.sync is not None:
            self.sync.changed()

    async def wait_idle(self, worker_id: str, timeout: float | None) -> bool:
        if self.sync is None:
            return True
        if isinstance(self.sync, HAProxySync):
            return await self.sync.wait_idle(worker_id, timeout, self.server.pid if self.server else None)
        return await self.sync.wait_idle(worker_id, timeout)

    def add_local_route(self, path: str, handler: Handler, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.routes.add(path, handler, headers)

    async def check(self, config: Config) -> str | None:
        """Why the server would reject ``config`` (``nginx -t``, ``haproxy -c`` of the file it
        would get), or None; nothing changes either way."""
        candidate = self.layout.config_file + ".check"
        try:
            with open(candidate, "w", encoding="utf-8") as handle:
                handle.write(self._renderer(config).text(self.model))
            await process.check(self.kind, self.binary, self.layout, candidate)
        except DataPlaneError as exc:
            return f"--proxy {self.kind}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(candidate)
        return None

    async def apply(self, config: Config) -> str:
        """A reloaded configuration: the server's file is rendered again, checked (``nginx -t``,
        ``haproxy -c``) and the server reloaded gracefully (its old workers finish their
        connections, WebSockets included; the listening sockets stay open); a file the server
        rejects is put back as it was and the running configuration stays."""
        if self.sync is None:
            return f"--proxy {self.kind}: not running; it starts with the new configuration"
        check = "nginx -t" if self.kind == "nginx" else "haproxy -c"
        previous = self.renderer
        self.renderer = self._renderer(config)
        if self.renderer.text(self.model) == previous.text(self.model):
            self.config = config
            return f"{self.kind}: its configuration is unchanged"
        self._write()
        try:
            await process.check(self.kind, self.binary, self.layout)
        except DataPlaneError as exc:
            self.renderer = previous
            self._write()
            return f"{self.kind}: the new configuration was NOT applied (the running one stays): {exc}"
        self.config = config
        if isinstance(self.sync, HAProxySync):
            master = self.server.pid if self.server else None
            failed = await self.sync.reload(master, self._write) if master else None
            if failed:
                return f"haproxy: configuration regenerated and checked ({check}), but {failed}"
        else:
            await self.sync.resync()  # SIGHUP once the text differs, as for a worker change
        return f"{self.kind}: configuration regenerated, checked ({check}) and reloaded"

    def _renderer(self, config: Config) -> Renderer:
        return Renderer(config, self.layout, idle_close_on_response=self.idle_close_on_response)

    # -- start / stop ----------------------------------------------------------------------
    def _write(self) -> str:
        return self.renderer.write(self.model)

    def _rendered(self) -> None:
        text = self._write()
        if isinstance(self.sync, HAProxySync):
            self.sync.rendered()
        elif isinstance(self.sync, NginxSync):
            self.sync.rendered(text)

    async def _restarted(self) -> None:
        assert self.sync is not None
        await self.sync.resync()

    async def start(self, family: tuple[Any, Any]) -> None:
        """Start the server with the current (ready) workers; DataPlaneError if it cannot serve."""
        self.routes.start(self.layout.fleet_socket)
        if self.kind == "haproxy":
            self.sync = HAProxySync(self.model, RuntimeAPI(self.layout.admin_socket), self.output)
        else:
            self.sync = NginxSync(self.model, self._write, lambda: self.server.pid if self.server else None,
                                  self.output)
        self.server = process.ServerProcess(
            self.kind, self.binary, self.layout, self.config.frontend, self.config.log_dir, self.output,
            before_start=self._rendered, on_restart=self._restarted,
            family=family)
        await self.server.start()
        self.sync.start()
        await self.sync.resync()

    async def stop(self, timeout: float) -> None:
        """Graceful: the server stops accepting and finishes in-flight requests (up to timeout)."""
        if self.sync is not None:
            await self.sync.close()
        if self.server is not None:
            await self.server.stop(timeout)
            self.stopped_server, self.server = self.server, None
        self.routes.close()
        self.remove_files()

    def remove_files(self) -> None:
        shutil.rmtree(self.layout.directory, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        own = self.renderer.own_metrics_path()
        return {
            "kind": self.kind,
            "pid": self.server.pid if self.server else None,
            "restarts": self.server.restarts if self.server else 0,
            "binary": self.binary,
            "directory": self.layout.directory,
            "metrics": own,
            "reloads": self.sync.reloads if self.sync is not None else None,
        }


__all__ = ["DataPlane", "DataPlaneError"]

