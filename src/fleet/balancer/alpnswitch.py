"""The TLS listener's protocol until the handshake is done: it picks HTTP/2 or HTTP/1.1 by ALPN.

Once the handshake has chosen, the transport goes to an ``h2conn.H2ClientConnection`` or to
the HTTP/1.1 ``protocol.ClientConnection``, so an HTTP/1.1 connection runs exactly as it did
without HTTP/2 (one choice per connection, nothing per request).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fleet.balancer.alpn import H2
from fleet.balancer.context import ProxyContext
from fleet.balancer.h2conn import H2ClientConnection
from fleet.balancer.protocol import ClientConnection


class AlpnChoice(asyncio.Protocol):
    """The TLS listener's protocol until the handshake is done: it picks by ALPN."""

    def __init__(self, proxy: ProxyContext) -> None:
        self.proxy = proxy

    def connection_made(self, transport: Any) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol: asyncio.Protocol = (H2ClientConnection(self.proxy) if chosen == H2
                                      else ClientConnection(self.proxy))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


def by_alpn(proxy: ProxyContext) -> AlpnChoice:
    """The TLS listener's protocol factory."""
    return AlpnChoice(proxy)


__all__ = ["AlpnChoice", "by_alpn"]
