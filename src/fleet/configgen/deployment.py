"""Facts about where a generated configuration will run that are not fleet options: the path of
the ``fleet`` executable, the working directory, Bokeh's static files, where the proxy keeps its
pid file, logs and temp files, and which user its workers run as.

``Deployment`` is a plain frozen value so the renderers stay pure and tests (and ``deploy/``)
pass fixed ones. ``detect`` is the one place that looks at the machine (``PATH``, the current
directory, the APP's source, the installed Bokeh, ``$FLEET_STATE_DIR``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Mapping

from fleet.appspec import AppError, AppKind, detect as detect_app
from fleet.config import Config, ConfigError
from fleet.configgen.managed import Managed
from fleet.values import parse_file_path

# Read by ``detect``: put the proxy's pid file, logs and temp files under this directory instead
# of the distribution's system locations, so nginx/Apache/HAProxy run without root.
STATE_DIR_ENV = "FLEET_STATE_DIR"


@dataclass(frozen=True)
class Deployment:
    """Where and how the generated configuration is used; every path is absolute."""

    fleet_executable: str = "/usr/local/bin/fleet"
    working_directory: str = "/srv/fleet"
    # Bokeh's static files (bokeh.util.paths.static_path()) when APP is a Bokeh app: the front
    # proxy serves /static/ itself, so workers spend no time on JavaScript bundles.
    bokeh_static_dir: str | None = None
    # None: the Debian system locations (/run, /var/log/<server>, /var/lib/nginx), for a proxy
    # started as root by its service manager. A directory: everything under it, unprivileged.
    state_dir: str | None = None
    # User/group the proxy's workers switch to when it is started as root. None: the Debian
    # service user (www-data, haproxy) for system locations, no switch with a state_dir.
    user: str | None = None
    group: str | None = None
    apache_modules_dir: str = "/usr/lib/apache2/modules"
    # Why there is no /static/ location although APP might be a Bokeh app (shown as a comment).
    note: str | None = None
    # ``fleet up --proxy nginx|haproxy``: fleet runs the server itself (fleet.dataplane).
    managed: Managed | None = None

    def state_path(self, name: str, system_path: str) -> str:
        """``state_dir/name`` for an unprivileged run, else the system path."""
        return os.path.join(self.state_dir, name) if self.state_dir else system_path


def fleet_executable(argv0: str, python: str, which: str | None) -> str:
    """The ``fleet`` that is running now, so the unit starts the same installation."""
    if os.path.basename(argv0) == "fleet" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    sibling = os.path.join(os.path.dirname(os.path.abspath(python)), "fleet")
    if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
        return sibling
    if which:
        return os.path.abspath(which)
    return f"{os.path.abspath(python)} -m fleet"


def bokeh_static_dir(config: Config, cwd: str) -> tuple[str | None, str | None]:
    """(static dir, note): Bokeh's static directory when APP is a Bokeh app, else why not."""
    if not config.app or config.cmd:
        return None, None
    try:
        spec = detect_app(config.app, cwd)
    except AppError as exc:
        return None, f"APP was not inspected ({exc}); no /static/ location"
    if spec.kind is not AppKind.BOKEH:
        return None, None
    try:
        from bokeh.util.paths import static_path
    except ImportError:
        return None, "bokeh is not importable here, so /static/ is left to the workers"
    return str(static_path()), None


def detect(config: Config, environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Deployment:
    """The Deployment for this machine, as ``fleet config`` uses it."""
    environ = os.environ if environ is None else environ
    cwd = cwd or os.getcwd()
    static_dir, note = bokeh_static_dir(config, cwd)
    state_dir = config.state_dir or environ.get(STATE_DIR_ENV) or None
    if state_dir and not config.state_dir:
        try:  # the same rule as --state-dir, whose environment variable this is too
            parse_file_path(state_dir)
        except ValueError as exc:
            raise ConfigError(f"${STATE_DIR_ENV}: {exc}") from None
    return Deployment(
        fleet_executable=fleet_executable(sys.argv[0], sys.executable, shutil.which("fleet")),
        working_directory=cwd,
        bokeh_static_dir=static_dir,
        state_dir=os.path.abspath(state_dir) if state_dir else None,
        note=note,
    )
