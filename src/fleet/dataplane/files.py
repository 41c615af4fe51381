"""Where a managed nginx/HAProxy keeps its files, and its configuration text.

Everything lives in one private directory (0700, owned by fleet's user) next to the control
socket: ``<runtime dir>/<name>.dataplane/`` (or ``<--control-socket>.dataplane/``). The
configuration, pid file, HAProxy's admin socket, fleet's own HTTP socket, nginx's temp
directories: nothing is written to the working directory or to system paths, so fleet runs
nginx and HAProxy without root. The directory is fleet's alone while fleet holds its control
socket, so leftovers of a killed fleet are removed at start.

The text comes from ``fleet config``'s renderers (``fleet.configgen``) with a ``Managed``
deployment: there is one generator per server, not a second one here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from dataclasses import dataclass, replace

from fleet.config import Config, OperationsSettings
from fleet.configgen import render
from fleet.configgen.deployment import Deployment, detect
from fleet.configgen.managed import Managed, own_metrics_path
from fleet.dataplane.model import PlaneModel

# fleet's built-in routes that the server forwards to the master (the status page and health
# checks live under /_fleet/).
FLEET_PREFIX = "/_fleet/"
# A unix socket path must fit in sun_path (108 bytes on Linux, with the terminating NUL).
# HAProxy binds a unix socket under a temporary name first (``<path>.<pid>.tmp``) and renames
# it, so its paths must leave room for that suffix: it refuses longer ones at start.
MAX_SOCKET_PATH = {"nginx": 107, "haproxy": 97}


class DataPlaneError(RuntimeError):
    """The data plane cannot run; ``str()`` is for the user."""


def private_directory(control_path: str) -> str:
    stem = control_path[:-5] if control_path.endswith(".sock") else control_path
    return stem + ".dataplane"


def make_private(path: str) -> None:
    """Create ``path`` 0700 afresh (removing what a killed fleet left in it), refusing a
    symlink or a directory of another user."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise DataPlaneError(f"{path} exists and is not a directory; remove it")
        if info.st_uid != os.getuid():
            raise DataPlaneError(f"{path} belongs to uid {info.st_uid}, not to you; remove it")
        shutil.rmtree(path)
    try:
        os.mkdir(path, 0o700)
    except OSError as exc:
        raise DataPlaneError(f"cannot create the data plane's directory {path}: {exc.strerror}") from None
    os.chmod(path, 0o700)  # whatever the umask


@dataclass(frozen=True)
class Layout:
    kind: str  # nginx or haproxy
    directory: str

    @property
    def config_file(self) -> str:
        return os.path.join(self.directory, f"{self.kind}.conf")

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.directory, "admin.sock")

    @property
    def fleet_socket(self) -> str:
        return os.path.join(self.directory, "fleet-http.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.directory, f"{self.kind}.pid")

    def check_lengths(self) -> None:
        longest = max((self.admin_socket, self.fleet_socket), key=len)
        limit = MAX_SOCKET_PATH.get(self.kind, 107)
        if len(longest.encode()) > limit:
            raise DataPlaneError(f"the data plane's socket path {longest} is longer than {limit} "
                                 f"bytes ({self.kind}'s limit for a unix socket); use a shorter "
                                 f"--control-socket or --name")


def fleet_paths(operations: OperationsSettings) -> tuple[str, ...]:
    """The paths the server hands to fleet's master: metrics (unless on --metrics-port or off)
    and /_fleet/."""
    paths = []
    if not operations.no_metrics and operations.metrics_port is None:
        paths.append(operations.metrics_path)
    paths.append(FLEET_PREFIX)
    return tuple(paths)


class Renderer:
    """Renders the server's configuration for the current slots, always the same way."""

    def __init__(self, config: Config, layout: Layout, deployment: Deployment | None = None, *,
                 idle_close_on_response: bool = False) -> None:
        self.config = config
        self.layout = layout
        self.idle_close_on_response = idle_close_on_response  # HAProxy 2.6+
        base = deployment if deployment is not None else detect(config)
        # The server runs with fleet's own rights. As root, nginx would switch its workers to
        # `nobody`, who cannot open fleet's private directory: name root instead.
        user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 and layout.kind == "nginx" else None
        self._deployment = replace(base, state_dir=layout.directory, user=user, group=None)

    def own_metrics_path(self) -> str | None:
        if self.config.no_metrics:
            return None
        return own_metrics_path(self.config.metrics_path, self.layout.kind)

    def text(self, model: PlaneModel) -> str:
        kind = self.layout.kind
        servers = model.haproxy_servers() if kind == "haproxy" else model.nginx_servers()
        managed = Managed(
            directory=self.layout.directory, servers=servers, admin_socket=self.layout.admin_socket,
            fleet_socket=self.layout.fleet_socket, fleet_paths=fleet_paths(self.config.operations),
            metrics_path=self.own_metrics_path(), metrics_allow=self.config.metrics_allow,
            trusted_proxies=self.config.trusted_proxies(),
            drain_timeout=self.config.drain_timeout, idle_close_on_response=self.idle_close_on_response,
        )
        # Managed nginx runs without the affinity maps of `fleet config nginx`: their per-worker
        # upstreams name fixed ports, and a blue/green reload moves every worker to the other
        # port block, so pinned clients would be sent to stopped workers (start-up says
        # --sticky is dropped with nginx; HAProxy keeps its cookie).
        config = replace(self.config, sticky=False) if kind == "nginx" else self.config
        return render(kind, config, replace(self._deployment, managed=managed))

    def write(self, model: PlaneModel) -> str:
        """Write the configuration (atomically: a reload never reads half a file); its text."""
        text = self.text(model)
        temporary = self.layout.config_file + ".new"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, self.layout.config_file)
        return text


__all__ = ["DataPlaneError", "FLEET_PREFIX", "Layout", "Renderer", "fleet_paths",
           "make_private", "private_directory"]
