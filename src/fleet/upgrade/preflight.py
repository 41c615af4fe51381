"""Before an upgrade touches anything: run the *newly installed* fleet in a subprocess.

``python -m fleet.upgrade.preflight up ARGS...`` (ARGS: the running master's own command line)
imports every module of the installed fleet, prints one JSON line (its version and the state
versions it reads), then validates the configuration as ``fleet check`` does. Exit 0: the new
code can take over. Anything else (an import error, a bad configuration, a state format it
cannot read) is the rollback point: after ``execv`` the old code is gone from disk too, so this
is the last moment the old master can still say no and keep serving.

Contract between releases: a new release keeps this module's command line and its first output
line (``{"version": ..., "reads": [...]}``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pkgutil
import sys
from dataclasses import dataclass

PREFLIGHT_TIMEOUT = 60.0  # importing Bokeh on a loaded machine takes seconds; a hang is a failure
MAX_OUTPUT = 256 * 1024  # what is kept of the subprocess's output for the operator
SKIPPED = ("__main__",)  # modules that run something when imported


@dataclass(frozen=True)
class Verdict:
    ok: bool
    version: str | None
    reads: tuple[int, ...]
    output: str  # the subprocess's output: the traceback when it failed


def import_everything() -> list[str]:
    """Import every module of the installed fleet package; their names."""
    import fleet

    names = []
    for info in pkgutil.walk_packages(fleet.__path__, "fleet."):
        if info.name.rsplit(".", 1)[-1] in SKIPPED:
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def main(argv: list[str]) -> int:
    import fleet
    from fleet.upgrade.state import READABLE

    import_everything()
    print(json.dumps({"version": fleet.__version__, "reads": sorted(READABLE)}), flush=True)
    if not argv or argv[0] != "up":
        print("preflight: expected the command line of `fleet up`", file=sys.stderr)
        return 2
    cli = importlib.import_module("fleet.cli").main  # already imported above, by name
    cli(args=["check", *argv[1:]], prog_name="fleet")  # exits 0, or 1 with fleet up's message
    return 0


def parse(returncode: int, output: bytes, needs: int) -> Verdict:
    """The verdict on a preflight's exit code and output (pure, for tests)."""
    text = output[-MAX_OUTPUT:].decode("utf-8", "replace")
    version, reads = None, ()
    for line in text.splitlines():
        try:
            first = json.loads(line)
        except ValueError:
            continue
        if isinstance(first, dict) and "version" in first:
            version, reads = str(first["version"]), tuple(int(r) for r in first.get("reads", ()))
            break
    ok = returncode == 0 and version is not None and needs in reads
    if returncode == 0 and version is not None and needs not in reads:
        text += f"\nthe new fleet {version} cannot read upgrade state version {needs} (reads {list(reads)})"
    return Verdict(ok, version, reads, text)


async def run(command_line: list[str], needs: int, timeout: float = PREFLIGHT_TIMEOUT) -> Verdict:
    """Run the preflight of the installed fleet with ``command_line`` (``["up", ...]``)."""
    env = {key: value for key, value in os.environ.items() if key != "FLEET_UPGRADE_STATE"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet.upgrade.preflight", *command_line,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=env)
    communicate = asyncio.ensure_future(proc.communicate())
    done, _ = await asyncio.wait({communicate}, timeout=timeout)
    if not done:
        proc.kill()
        output, _ = await communicate
        return Verdict(False, None, (), output[-MAX_OUTPUT:].decode("utf-8", "replace")
                       + f"\npreflight did not finish within {timeout:g} s")
    output, _ = communicate.result()
    assert proc.returncode is not None
    return parse(proc.returncode, output, needs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
