"""``/_fleet/health/live`` and ``/_fleet/health/ready``: probes for Kubernetes, load balancers
and uptime checks, served by fleet's proxy itself as local routes (same access rule as
``/metrics``: ``--metrics-allow``).

- live: the master's event loop answers (200). A stuck master answers nothing, and the
  prober restarts the pod.
- ready: at least one worker is ready (200), else 503, so a pod whose workers all crash-loop
  leaves the Service's endpoints without being restarted for it.

The bodies are small JSON objects. Pure functions of the worker snapshots; the proxy caches an
answer for a second.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

from fleet.supervisor.info import WorkerInfo

LIVE_PATH = "/_fleet/health/live"
READY_PATH = "/_fleet/health/ready"
CONTENT_TYPE = "application/json"

Answer = tuple[int, str, bytes]


def live() -> Answer:
    return 200, CONTENT_TYPE, b'{"status": "live"}\n'


def ready(workers: Iterable[WorkerInfo], desired: int, host_id: str | None = None) -> Answer:
    """``host_id`` (``--host-id``) is how ``fleet balance --resolve`` learns which host an
    address is, and so where the sessions whose ids name it go."""
    infos = list(workers)
    count = sum(1 for info in infos if info.ready)
    body: dict[str, object] = {"status": "ready" if count else "not ready", "ready": count,
                               "workers": len(infos), "desired": desired}
    if host_id:
        body["host_id"] = host_id
    return (200 if count else 503), CONTENT_TYPE, (json.dumps(body) + "\n").encode()


def routes(workers: Callable[[], list[WorkerInfo]], desired: Callable[[], int],
           host_id: str | None = None) -> dict[str, Callable[[], Answer]]:
    """The local routes to register on the proxy (path -> handler)."""
    return {LIVE_PATH: live, READY_PATH: lambda: ready(workers(), desired(), host_id)}


__all__ = ["LIVE_PATH", "READY_PATH", "live", "ready", "routes"]
