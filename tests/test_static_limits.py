"""The proxy's static files at their limits, on a real Bokeh fleet: a FIFO in an app's
``static/`` (refused without blocking the master), a file over ``MAX_FILE`` (left to the
workers), and more than ``MAX_CACHE`` of files (answered right, memory bounded)."""

from __future__ import annotations

import os
import shutil
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleet.balancer.static_files import MAX_CACHE, MAX_FILE, Root, StaticFiles, read_regular
from support import free_port, free_port_range, start_fleet
from up_helpers import Fleet

APPS = Path(__file__).resolve().parent / "apps"


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_read_regular_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert read_regular(str(fifo)) is None
    assert time.monotonic() - started < 1.0
    files = StaticFiles([Root(b"/static/", str(tmp_path))])
    assert files.lookup(files.roots[0], b"fifo.txt") is None
    (tmp_path / "dev").symlink_to("/dev/zero")
    assert files.lookup(files.roots[0], b"dev") is None  # out of the root, and not a regular file
    assert read_regular("/dev/zero") is None


def test_big_files_go_to_workers_and_the_cache_stays_bounded(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"b" * (MAX_FILE + 1))
    sizes = MAX_FILE - 1
    count = MAX_CACHE // sizes + 2
    for index in range(count):
        (tmp_path / f"f{index}.bin").write_bytes(bytes([65 + index]) * sizes)
    files = StaticFiles([Root(b"/static/", str(tmp_path))])
    assert files.root_for(b"/static/big.bin") is None  # the workers serve it
    for _ in range(2):
        for index in range(count):
            root, tail = files.root_for(b"/static/f%d.bin" % index)  # type: ignore[misc]
            entry = files.lookup(root, tail)
            assert entry is not None and entry.body == bytes([65 + index]) * sizes
    assert files.cached_bytes <= MAX_CACHE


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    app = tmp_path / "gallery"
    shutil.copytree(APPS / "gallery", app)
    static = app / "static"
    os.mkfifo(static / "fifo.txt")
    (static / "big.bin").write_bytes(b"z" * (MAX_FILE + 4096))
    for index in range(MAX_CACHE // (MAX_FILE - 1) + 2):
        (static / f"f{index}.bin").write_bytes(bytes([97 + index]) * (MAX_FILE - 1))
    return app


@pytest.mark.timeout(180)
def test_a_fifo_big_files_and_a_full_cache_on_a_real_fleet(tmp_path: Path, gallery: Path) -> None:
    base, port = free_port_range(1), free_port()
    proc = start_fleet("up", str(gallery), "-n", "1", "--base-port", str(base), "--port", str(port),
                       "--control-socket", str(tmp_path / "fleet.sock"), cwd=str(tmp_path))
    fleet = Fleet(proc, base, port, str(tmp_path / "fleet.sock"))
    with proc:
        proc.wait_for_output(r"ready: open http://localhost:\d+/", timeout=90)
        url = f"http://127.0.0.1:{port}/gallery/static"
        assert get(f"{url}/hello.txt") == (200, b"hello from gallery static\n")
        started = time.monotonic()
        status, _ = get(f"{url}/fifo.txt", timeout=5.0)
        assert status in (403, 404)
        assert time.monotonic() - started < 5.0
        # The master was never blocked: the proxy, the status page and the control socket answer.
        assert get(f"{url}/hello.txt")[0] == 200
        assert get(f"http://127.0.0.1:{port}/_fleet/status.json")[0] == 200
        assert fleet.status()["workers"]
        # Over MAX_FILE: the worker's own static handler answers it, whole.
        status, body = get(f"{url}/big.bin", timeout=30.0)
        assert status == 200 and body == b"z" * (MAX_FILE + 4096)
        # More than MAX_CACHE in all: every answer right, twice (cached or read again).
        for _ in range(2):
            for index in range(MAX_CACHE // (MAX_FILE - 1) + 2):
                status, body = get(f"{url}/f{index}.bin", timeout=30.0)
                assert status == 200 and body == bytes([97 + index]) * (MAX_FILE - 1), index
        assert stat.S_ISFIFO(os.stat(gallery / "static" / "fifo.txt").st_mode)  # nobody opened it
