"""The TLS section of fleet's settings.

HTTPS on the proxy port: certificate, key (its password only from the environment), the plain
HTTP redirect listener and HSTS. Read by the proxy (``config.tls``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import PROXY, option
from fleet.values import parse_bool, parse_file_path, parse_hsts, parse_port


@dataclass(frozen=True)
class TLSSettings:
    """The TLS section (``config.tls``); frozen."""

    ssl_certfile: str | None = option(
        None, "--ssl-certfile", parse=parse_file_path, metavar="PATH", commands=PROXY,
        help="Serve HTTPS with this certificate (PEM).",
    )
    ssl_keyfile: str | None = option(
        None, "--ssl-keyfile", parse=parse_file_path, metavar="PATH", commands=PROXY,
        help="Private key for --ssl-certfile (password from $FLEET_SSL_PASSWORD or "
             "$BOKEH_SSL_PASSWORD). SIGHUP / fleet reload re-reads certificate and key.",
    )
    https_redirect_port: int | None = option(
        None, "--https-redirect-port", parse=parse_port, metavar="PORT", commands=PROXY,
        show_default="none",
        help="With TLS: also listen for plain HTTP on this port and redirect (301/308) to https "
             "on --port.",
    )
    hsts: int | None = option(
        None, "--hsts", parse=parse_hsts, metavar="SECONDS", commands=PROXY, show_default="off",
        help="With TLS: send Strict-Transport-Security: max-age=SECONDS (63072000 = 2 years).",
    )
    http2: bool = option(
        True, "--http2/--no-http2", is_flag=True, parse=parse_bool, commands=PROXY,
        help="With TLS: offer HTTP/2 (ALPN h2) besides HTTP/1.1, WebSockets over HTTP/2 "
             "(RFC 8441) included; workers still see HTTP/1.1.",
    )
    # Not an option: the password comes only from the environment, never from argv.
    ssl_password: str | None = None
    # Not an option: with --domain, where the proxy finds the ACME challenges it answers
    # (fleet.acme.paths.managed_certificate sets it, and the certificate paths).
    acme_challenges: str | None = None


__all__ = ["TLSSettings"]
