"""The proxy's TLS context: built once at start from the TLS section, its certificate read
again on a reload (new handshakes use the new one, open connections keep theirs), and its ALPN
list (``balancer.alpn``) set again when ``--http2`` changes.
"""

from __future__ import annotations

import ssl

from fleet.balancer.alpn import alpn_protocols
from fleet.config.sections import TLSSettings


def server_context(tls: TLSSettings) -> ssl.SSLContext | None:
    """The TLS context of every listener, or None without ``--ssl-certfile``."""
    if not tls.ssl_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.ssl_certfile, tls.ssl_keyfile, password=tls.ssl_password)
    context.set_alpn_protocols(alpn_protocols(tls.http2))
    return context


def reload_context(context: ssl.SSLContext | None, tls: TLSSettings) -> str | None:
    """Read --ssl-certfile/--ssl-keyfile again into ``context``. None when there is no TLS,
    else a message for the log; a certificate that cannot be loaded leaves the old one serving."""
    if context is None or not tls.ssl_certfile:
        return None
    try:
        context.load_cert_chain(tls.ssl_certfile, tls.ssl_keyfile, password=tls.ssl_password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return f"TLS certificate NOT reloaded, the previous one stays in use: {exc}"
    return f"TLS certificate reloaded from {tls.ssl_certfile}"


def set_alpn(context: ssl.SSLContext | None, tls: TLSSettings) -> None:
    """A reload's ``--http2``: new handshakes offer the new list."""
    if context is not None and tls.ssl_certfile:
        context.set_alpn_protocols(alpn_protocols(tls.http2))


__all__ = ["reload_context", "server_context", "set_alpn"]
