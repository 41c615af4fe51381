"""The proxy's TLS: one ``SSLContext`` for every listener, its reload, and the hooks automatic
HTTPS (``--domain``, ``fleet.acme``) needs in the handshake.

Its ALPN list is ``balancer.alpn``'s (``h2`` with ``--http2``), set again by ``set_alpn`` when a
reload changes ``--http2``. ``reload`` loads the certificate and key again into the same context, so new handshakes use
the new certificate while open connections (WebSockets included) carry on; a certificate that
cannot be loaded leaves the old one serving.

With ``--domain`` (``tls.acme_challenges`` set) the certificate may not exist yet: the context
starts without one, and until the first ``reload`` that loads it every handshake is refused
by the SNI callback with a log line (at most one every ``REFUSAL_LOG_EVERY`` seconds). The same
callback hands a TLS-ALPN-01 validator its challenge certificate (``fleet.acme.answers``).
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any, Callable

from fleet.acme.answers import ACME_TLS, AlpnChallenges, remember_alpn_offer
from fleet.balancer.alpn import alpn_protocols
from fleet.config.sections import TLSSettings

REFUSAL_LOG_EVERY = 10.0


class ServerTLS:
    """The listeners' ``SSLContext`` and how it changes certificate."""

    def __init__(self, tls: TLSSettings, log: Callable[[str], None]) -> None:
        assert tls.ssl_certfile
        self.log = log
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.set_alpn_protocols(alpn_protocols(tls.http2))
        self.has_certificate = False
        self.refused = 0
        self._logged_at = -REFUSAL_LOG_EVERY
        self.challenges: AlpnChallenges | None = None
        if tls.acme_challenges is None:
            self.load(tls)  # a given certificate that cannot be read fails the start
            return
        self.challenges = AlpnChallenges(tls.acme_challenges)
        self.context.sni_callback = self._on_server_name
        self.context._msg_callback = remember_alpn_offer  # type: ignore[attr-defined]
        if os.path.exists(tls.ssl_certfile):
            try:
                self.load(tls)
            except (OSError, ssl.SSLError, ValueError) as exc:
                log(f"stored ACME certificate not usable, a new one will be ordered: {exc}")

    def load(self, tls: TLSSettings) -> None:
        self.context.load_cert_chain(tls.ssl_certfile or "", tls.ssl_keyfile, password=tls.ssl_password)
        self.has_certificate = True

    def reload(self, tls: TLSSettings) -> str:
        """Read the certificate and key again; a message for the log."""
        if self.challenges is not None and not os.path.exists(tls.ssl_certfile or ""):
            return "TLS: no ACME certificate yet (fleet is obtaining it); handshakes stay refused"
        try:
            self.load(tls)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return f"TLS certificate NOT reloaded, the previous one stays in use: {exc}"
        return f"TLS certificate reloaded from {tls.ssl_certfile}"

    def set_alpn(self, tls: TLSSettings) -> None:
        """A reload's ``--http2``: new handshakes offer the new list."""
        self.context.set_alpn_protocols(alpn_protocols(tls.http2))

    def _on_server_name(self, conn: Any, name: str | None, context: ssl.SSLContext) -> int | None:
        offer = getattr(conn, "fleet_alpn_offer", ())
        if name and offer == (ACME_TLS,) and self.challenges is not None:
            challenge = self.challenges.context_for(name.lower())
            if challenge is not None:
                conn.context = challenge  # the validator's handshake only: it sends no request
                return None
        if self.has_certificate:
            return None
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_EVERY:
            self._logged_at = now
            self.log(f"TLS handshake refused ({self.refused} so far): no certificate yet for "
                     f"{name or 'a client without SNI'}; fleet is obtaining it from the ACME CA "
                     f"(plain HTTP on --https-redirect-port answers the CA meanwhile)")
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE


def server_tls(tls: TLSSettings, log: Callable[[str], None]) -> ServerTLS | None:
    """The proxy's TLS, or None without ``--ssl-certfile``/``--domain``."""
    return ServerTLS(tls, log) if tls.ssl_certfile else None


__all__ = ["REFUSAL_LOG_EVERY", "ServerTLS", "server_tls"]
