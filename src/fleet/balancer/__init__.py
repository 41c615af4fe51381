"""The built-in reverse proxy: least connections, keep-alive pools, WebSocket relay.

``policy`` chooses a worker, ``head`` holds the HTTP head rules, ``protocol`` and ``upstream``
move the bytes, ``server`` owns the listeners, ``stats`` the counters, ``standalone`` runs
``fleet balance``.
"""

from fleet.balancer.server import Balancer

__all__ = ["Balancer"]
