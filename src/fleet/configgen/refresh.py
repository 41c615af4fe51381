"""Regenerate the example configurations in ``deploy/`` from fixed options.

    python -m fleet.configgen.refresh           # rewrite deploy/... in the current directory
    python -m fleet.configgen.refresh --check   # exit 1 (and name them) if any is out of date

The examples use fixed paths (``/usr/local/bin/fleet``, ``/srv/fleet``) rather than this
machine's, so the output is the same everywhere; a test renders them again and compares.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from fleet.config import Config, build_config
from fleet.configgen import render
from fleet.configgen.deployment import Deployment

EXAMPLE_APP = "examples/bokeh_random"

# Where `pip install 'fleet[bokeh]'` puts things with Debian's python3.11 (as root).
DEPLOY_TARGET = Deployment(
    fleet_executable="/usr/local/bin/fleet",
    working_directory="/srv/fleet",
    bokeh_static_dir="/usr/local/lib/python3.11/dist-packages/bokeh/server/static",
)

# An external proxy on the public port 80, in front of `fleet up --no-proxy`.
_PUBLIC = {"workers": "3", "address": "0.0.0.0", "port": "80", "allow_websocket_origin": ("example.com",)}
# fleet with its own proxy (systemd, Docker): public on 5006.
_SELF_CONTAINED = {"workers": "3", "address": "0.0.0.0"}


@dataclass(frozen=True)
class DeployFile:
    path: str  # relative to the repository root
    kind: str  # a key of fleet.configgen.RENDERERS
    options: dict[str, Any]

    def config(self) -> Config:
        return build_config(self.options, {}, {}, command="config", app=EXAMPLE_APP)

    def render(self) -> str:
        return render(self.kind, self.config(), DEPLOY_TARGET)


DEPLOY_FILES = (
    DeployFile("deploy/nginx/fleet.conf", "nginx", _PUBLIC),
    DeployFile("deploy/apache/fleet.conf", "apache", _PUBLIC),
    DeployFile("deploy/haproxy/haproxy.cfg", "haproxy", _PUBLIC),
    DeployFile("deploy/systemd/fleet.service", "systemd", _SELF_CONTAINED),
    DeployFile("deploy/docker/Dockerfile", "dockerfile", _SELF_CONTAINED),
    DeployFile("deploy/docker/compose.yml", "compose", _SELF_CONTAINED),
    DeployFile("deploy/kubernetes/fleet.yaml", "kubernetes",
               {"workers": "2", "allow_websocket_origin": ("example.com",), "allow_host": ("example.com",)}),
)


def stale_files(root: str) -> list[str]:
    """The deploy files under ``root`` whose content differs from a fresh rendering."""
    stale = []
    for item in DEPLOY_FILES:
        target = os.path.join(root, item.path)
        try:
            with open(target, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        if current != item.render():
            stale.append(item.path)
    return stale


def write_all(root: str) -> list[str]:
    """Rewrite every deploy file under ``root``; return the paths that changed."""
    changed = stale_files(root)
    for item in DEPLOY_FILES:
        if item.path in changed:
            target = os.path.join(root, item.path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(item.render())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.configgen.refresh", description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=".", help="repository root (default: .)")
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            print(f"out of date: {path} (run python -m fleet.configgen.refresh)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
