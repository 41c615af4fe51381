"""A dnsmasq for a test: answers fixed names from a hosts file it re-reads on SIGHUP, and
nothing else (no upstream, no /etc/hosts). Started and stopped by the test that uses it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def need_dnsmasq() -> None:
    if not os.path.exists(DNSMASQ):
        if os.environ.get("CI") == "true":
            raise AssertionError("dnsmasq is missing (Debian's dnsmasq-base)")
        pytest.skip("dnsmasq is not installed (Debian's dnsmasq-base)")


class Dnsmasq:
    """``dnsmasq --no-daemon`` on ADDRESS:PORT, answering from ``hosts`` (``IP NAME`` lines)."""

    def __init__(self, directory: Path, address: str, port: int, ttl: int,
                 prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        self.hosts = directory / "dns-hosts"
        self.hosts.touch()
        self.argv = [*prefix, DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                     f"--port={port}", f"--listen-address={address}", "--bind-interfaces", "--user=root",
                     "--pid-file=", f"--addn-hosts={self.hosts}", f"--local-ttl={ttl}", "--local=/test/",
                     "--cache-size=0", *extra]
        self.log = directory / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, lines: Sequence[str]) -> None:
        self.hosts.write_text("".join(f"{line}\n" for line in lines))

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def reread(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
