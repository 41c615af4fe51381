"""Which application protocols the TLS port offers (ALPN), in one place.

A pure function of the settings: the TLS context (``balancer.tlscontext``) sets what it returns
at start and again on a reload. ``h2`` comes first because a client picks from the server's
order only when it offers both (OpenSSL's server side takes the server's preference);
``http/1.1`` stays offered for every client without HTTP/2. A certificate challenge protocol
(``acme-tls/1``, TLS-ALPN-01) is answered through an SNI callback on the same context and is
not listed here: offering it to ordinary clients would let them select it.
"""

from __future__ import annotations

H2 = "h2"
HTTP11 = "http/1.1"


def alpn_protocols(http2: bool) -> list[str]:
    """The ALPN list of the TLS port: ``h2`` first when ``--http2`` is on, then HTTP/1.1."""
    return [H2, HTTP11] if http2 else [HTTP11]


__all__ = ["H2", "HTTP11", "alpn_protocols"]
