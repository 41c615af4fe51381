"""Workers honour X-headers only from a proxy they trust.

Tornado's ``xheaders=True`` believes ``X-Real-IP``, ``X-Forwarded-For``, ``X-Scheme`` and
``X-Forwarded-Proto`` from whoever sends them. Behind fleet's proxy that is fine (the proxy
replaces them), but a worker reached directly (``fleet up --no-proxy --address 0.0.0.0``)
would let any client claim ``https`` or ``127.0.0.1``. ``GuardedHTTPServer`` removes every
forwarding header (``balancer.trust.is_forwarding_header``) from a peer that is neither fleet's
own proxy (``127.0.0.1`` / ``::1``) nor a ``--trusted-proxy``, before Tornado reads them.

``install`` makes it the class every ``tornado.httpserver.HTTPServer(...)`` call builds in this
process (Tornado's ``Configurable.configure``), so Bokeh's ``Server`` uses it too.
"""

from __future__ import annotations

from typing import Any, Awaitable, Iterable

import tornado.httpserver
from tornado import httputil

from fleet.balancer.trust import TrustedProxies, is_forwarding_header

# Where fleet's own proxy connects from. Not all of 127.0.0.0/8: another local address is
# another local program, and trusting it is what --trusted-proxy is for.
FLEET_PROXY = ("127.0.0.1", "::1")


class _StripForwarding(httputil.HTTPMessageDelegate):
    """Drops forwarding headers of one request, then hands it on unchanged."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate) -> None:
        self.delegate = delegate

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        for name in [name for name in headers if is_forwarding_header(name.lower().encode("latin-1"))]:
            del headers[name]
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """An ``HTTPServer`` whose ``xheaders`` apply only to trusted peers."""

    def initialize(self, *args: Any, trusted_proxies: Iterable[str] = (), **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.trusted = TrustedProxies((*FLEET_PROXY, *trusted_proxies))

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if not self.xheaders:
            return delegate
        address = getattr(getattr(request_conn, "context", None), "address", None)
        peer = address[0] if isinstance(address, tuple) and address else "unix"
        if self.trusted.is_trusted(str(peer)):
            return delegate
        return _StripForwarding(delegate)  # outermost: runs before Tornado's _ProxyAdapter


def install(trusted_proxies: Iterable[str]) -> None:
    """Make every ``HTTPServer`` built in this process a ``GuardedHTTPServer``."""
    tornado.httpserver.HTTPServer.configure(GuardedHTTPServer, trusted_proxies=tuple(trusted_proxies))


__all__ = ["FLEET_PROXY", "GuardedHTTPServer", "install"]
