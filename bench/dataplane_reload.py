"""Requests failed through reloads behind each data plane (``fleet up --proxy KIND``).

    python bench/dataplane_reload.py                       # builtin, haproxy, nginx; 3 reloads each
    python bench/dataplane_reload.py haproxy nginx --reloads 5 --clients 8

Each round: ``fleet up examples/tornado_hello.py -n 2 --proxy KIND --no-sticky`` on free ports,
``--clients`` keep-alive ``http.client`` connections sending GETs in a loop (``LoadGenerator``
of ``tests/test_drills.py``: a request that raises counts as failed), ``--reloads`` ``fleet
reload`` one second apart, then ``fleet down``. Prints sent / failed / statuses per kind.
A report, not a test (``tests/test_dataplane.py`` asserts the HAProxy figure).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import EXAMPLES  # noqa: E402
from test_drills import LoadGenerator  # noqa: E402
from up_helpers import up  # noqa: E402


def measure(kind: str, reloads: int, clients: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-dataplane-"))
    fleet = up(tmp, str(EXAMPLES / "tornado_hello.py"), "--proxy", kind, "--no-sticky", workers=2, proxy=True)
    with fleet.proc:
        fleet.proc.wait_for_output("ready: open", 60)
        load = LoadGenerator(fleet.port, clients=clients)
        try:
            time.sleep(1)
            for _ in range(reloads):
                result = fleet.cli("reload")
                if result.returncode != 0:
                    raise SystemExit(f"{kind}: reload failed: {result.stderr}")
                time.sleep(1)
        finally:
            outcome = load.stop()
        fleet.cli("down")
        fleet.proc.wait(60)
    errors = sorted({error.split(":")[0] for error in outcome.errors})
    return (f"{kind:8} sent {outcome.sent:6}  failed {outcome.failed:4}  statuses {dict(outcome.statuses)}"
            f"  {' '.join(errors)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kinds", nargs="*", default=["builtin", "haproxy", "nginx"])
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    for kind in args.kinds:
        print(measure(kind, args.reloads, args.clients), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
