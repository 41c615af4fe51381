"""A private systemd user manager for one test: the real systemd, in its own cgroup subtree.

This machine (and a CI container) has no systemd as PID 1, so ``systemctl``/``systemd-run``
have no manager to talk to. ``systemd --user`` itself runs anywhere once it believes the system
was booted with systemd (``/run/systemd/system`` exists), but it takes the cgroup it finds
itself in as its own to manage: started in the machine's root cgroup it moves *every process
of the machine* into ``init.scope``. So the manager gets what a container runtime gives it:

- a cgroup subtree of its own (``fleet-sd-<pid>``), entered before anything else runs;
- new mount and cgroup namespaces, where that subtree is mounted as the whole cgroup tree and
  ``/run/systemd/system`` is a private tmpfs directory;
- a refusal to start if the cgroup root it sees still holds the machine's PID 1.

Units go in ``$XDG_CONFIG_HOME/systemd/user``; ``systemctl --user`` reaches the manager on its
private socket in ``$XDG_RUNTIME_DIR/systemd/private``. Needs root (CAP_SYS_ADMIN) for the
namespaces and mounts; ``start`` raises ``Unavailable`` (with the reason) where that is refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support import wait_until

SYSTEMD = "/lib/systemd/systemd"
CGROUP = Path("/sys/fs/cgroup")

INNER = r"""#!/bin/sh
# In new mount + cgroup namespaces, already inside the manager's own cgroup subtree.
set -eu
mount --make-rprivate /
if [ "$1" = hybrid ]; then
  mount -t tmpfs tmpfs /sys/fs/cgroup
  mkdir /sys/fs/cgroup/unified /sys/fs/cgroup/systemd
  mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
  mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
  root=/sys/fs/cgroup/unified
else
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  root=/sys/fs/cgroup
fi
# The machine's PID 1 lives in the machine's root cgroup: seeing it means the namespace did not apply.
if grep -qx 1 "$root/cgroup.procs" || [ "$(wc -l < "$root/cgroup.procs")" -gt 5 ]; then
  echo "refusing to start systemd: this cgroup root is not private" >&2
  exit 97
fi
mkdir -p /run/systemd
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system
exec "$2" --user
"""


class Unavailable(Exception):
    """This machine cannot run a private systemd manager (says why)."""


def _layout() -> tuple[str, list[Path]]:
    """("hybrid", [unified, name=systemd]) or ("unified", [/sys/fs/cgroup])."""
    if (CGROUP / "unified" / "cgroup.procs").exists() and (CGROUP / "systemd" / "cgroup.procs").exists():
        return "hybrid", [CGROUP / "unified", CGROUP / "systemd"]
    if (CGROUP / "cgroup.controllers").exists():
        return "unified", [CGROUP]
    raise Unavailable("no cgroup v2 hierarchy (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)")


class UserManager:
    """``systemd --user`` in a private cgroup subtree; ``systemctl`` runs against it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="fleet-sd-"))  # short: socket paths stay < 108 bytes
        self.runtime = self.base / "run"
        self.units = self.base / "config" / "systemd" / "user"
        self.proc: subprocess.Popen[str] | None = None
        self.cgroups: list[Path] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET")}
        env.update(XDG_RUNTIME_DIR=str(self.runtime), XDG_CONFIG_HOME=str(self.base / "config"))
        return env

    def start(self, timeout: float = 30.0) -> None:
        if os.geteuid() != 0:
            raise Unavailable("needs root: namespaces, mounts and a cgroup subtree for the manager")
        if not os.path.exists(SYSTEMD):
            raise Unavailable(f"{SYSTEMD} is not installed")
        layout, hierarchies = _layout()
        self.runtime.mkdir(mode=0o700)
        self.units.mkdir(parents=True)
        inner = self.base / "inner.sh"
        inner.write_text(INNER)
        inner.chmod(0o700)
        name = f"fleet-sd-{os.getpid()}-{self.base.name[-8:]}"
        try:
            for hierarchy in hierarchies:
                (hierarchy / name).mkdir()
                self.cgroups.append(hierarchy / name)
        except OSError as exc:
            raise Unavailable(f"cannot create a cgroup under {hierarchy}: {exc.strerror}") from None
        cgroups = list(self.cgroups)

        def enter_cgroup() -> None:  # in the child, before exec: the subtree holds only it
            for group in cgroups:
                (group / "cgroup.procs").write_text(str(os.getpid()))

        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--cgroup", str(inner), layout, SYSTEMD], env=self.env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=enter_cgroup, start_new_session=True)
        private = self.runtime / "systemd" / "private"

        proc = self.proc

        def up_or_gone() -> bool:
            if proc.poll() is not None:
                return True
            # (is-system-running says "offline" here: it looks for /run/systemd/system itself.)
            return private.exists() and self.systemctl("show", "--property=SystemState", check=False).stdout.strip() in (
                "SystemState=running", "SystemState=degraded")

        wait_until(up_or_gone, timeout, interval=0.2, message="the private systemd user manager running")
        if proc.poll() is not None:  # unshare or mount refused (no CAP_SYS_ADMIN), or the safety check
            output = proc.stdout.read() if proc.stdout else ""
            raise Unavailable(f"systemd --user exited ({proc.returncode}): {output.strip()[-500:]}")

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["systemctl", "--user", "--no-pager", *args], env=self.env(), capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def close(self) -> None:
        """Stop the manager (it stops its units), kill what is left in its subtree, remove it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for group in self.cgroups:
            self._remove(group)
        shutil.rmtree(self.base, ignore_errors=True)

    @staticmethod
    def _remove(group: Path) -> None:
        deadline = time.monotonic() + 10
        while group.exists():
            for pids in group.rglob("cgroup.procs"):
                for pid in pids.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)  # only ever processes of this manager's subtree
                    except ProcessLookupError:
                        pass
            for directory in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    directory.rmdir()
                except OSError:
                    pass
            try:
                group.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
