"""The built-in reverse proxy: least connections, keep-alive pools, WebSocket relay.

``policy`` chooses a worker, ``request_rules`` and ``response_rules`` hold the HTTP head rules
(``head`` picks the compiled or Python path), ``protocol`` and ``upstream`` move the bytes,
``server`` owns the listeners, ``stats`` the counters, ``standalone`` runs ``fleet balance``.
"""

from typing import Any

__all__ = ["Balancer"]


def __getattr__(name: str) -> Any:
    """``Balancer`` is imported on first use: workers import only the pure ``balancer.trust``,
    and must not pay for the proxy's modules at every start."""
    if name == "Balancer":
        from fleet.balancer.server import Balancer

        return Balancer
    raise AttributeError(f"module 'fleet.balancer' has no attribute {name!r}")
