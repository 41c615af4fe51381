"""A second local user against fleet's control-socket directory: a directory made first by
someone else, a planted symlink, a planted socket. Each is refused with a clear error and
never followed or connected to. The other user is real (uid 65534 through ``setpriv``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

APPS = Path(__file__).resolve().parent / "apps"
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as a second user")


def as_nobody(*argv: str) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                   check=True, timeout=30)


def fleet(runtime: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
    return subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def up(runtime: str, name: str) -> subprocess.CompletedProcess[str]:
    """``fleet up`` that stops at its control socket (or would start: then it is stopped)."""
    return fleet(runtime, "up", str(APPS / "backend.py"), "--no-proxy", "--name", name, "--base-port", "1",
                 "--start-timeout", "1")


class Bait:
    """A listening unix socket that counts the connections it gets (someone else's 'fleet')."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A directory like /tmp (1777) that uid 65534 can write in; removed at the end."""
    path = tempfile.mkdtemp(prefix="fleet-attack-", dir="/tmp")
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_runtime_dir_created_first_by_another_user_is_refused(shared_tmp: str) -> None:
    as_nobody("mkdir", "-m", "0700", os.path.join(shared_tmp, "fleet"))
    result = up(shared_tmp, "a")
    assert result.returncode == 1
    assert f"belongs to uid {NOBODY}, not to you" in result.stdout + result.stderr
    result = fleet(shared_tmp, "ls")
    assert result.returncode == 1 and f"belongs to uid {NOBODY}" in result.stderr
    assert os.listdir(os.path.join(shared_tmp, "fleet")) == []


def test_a_runtime_dir_planted_as_a_symlink_is_refused_and_not_followed(shared_tmp: str) -> None:
    target = os.path.join(shared_tmp, "theirs")
    as_nobody("mkdir", "-m", "0777", target)
    as_nobody("ln", "-s", target, os.path.join(shared_tmp, "fleet"))
    result = up(shared_tmp, "a")
    assert result.returncode == 1 and "is not a directory (a symlink or a file)" in result.stdout + result.stderr
    assert os.listdir(target) == []  # nothing was created through the link


def test_a_runtime_dir_with_the_wrong_mode_is_refused(shared_tmp: str) -> None:
    own = os.path.join(shared_tmp, "fleet")
    os.mkdir(own, 0o700)
    os.chmod(own, 0o755)
    result = up(shared_tmp, "a")
    assert result.returncode == 1 and "open to other users (mode 0755, needs 0700)" in result.stdout + result.stderr


def test_a_planted_symlink_or_foreign_socket_is_never_connected_to(shared_tmp: str) -> None:
    own = os.path.join(shared_tmp, "fleet")
    os.mkdir(own, 0o700)
    bait = Bait(os.path.join(shared_tmp, "bait.sock"))
    foreign = Bait(os.path.join(own, "foreign.sock"))
    os.chown(foreign.path, NOBODY, NOBODY)  # as if another user had put it there
    try:
        os.symlink(bait.path, os.path.join(own, "linked.sock"))
        result = up(shared_tmp, "linked")
        assert result.returncode == 1
        assert "linked.sock exists and is a symlink; refusing to replace it" in result.stdout + result.stderr
        result = up(shared_tmp, "foreign")
        assert result.returncode == 1
        assert f"is a socket of uid {NOBODY}, not yours" in result.stdout + result.stderr
        result = fleet(shared_tmp, "ls")
        assert "no fleet running" in result.stdout
        assert bait.connections == 0 and foreign.connections == 0
        assert os.path.islink(os.path.join(own, "linked.sock")) and os.path.exists(foreign.path)
    finally:
        bait.close()
        foreign.close()
