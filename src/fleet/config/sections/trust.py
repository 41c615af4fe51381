"""The Trust section of fleet's settings.

Whom fleet believes and whom it lets in: the proxies whose forwarding headers count, the allowed
Host headers and WebSocket origins, and who may see the built-in routes. Entries are parsed by
``fleet.rules``; read by the proxy and the workers' guard (``config.trust``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import PROXY, option
from fleet.rules import LOOPBACK, PRIVATE, parse_cidr, validate_host_entry, validate_origin_entry
from fleet.values import DEFAULT_METRICS_ALLOW, parse_bool, parse_network


@dataclass(frozen=True)
class TrustSettings:
    """The Trust section (``config.trust``); frozen."""

    use_xheaders: bool = option(
        False, "--use-xheaders", is_flag=True, parse=parse_bool, commands=PROXY,
        help="Deprecated: same as --trusted-proxy for loopback and private networks "
             "(127.0.0.0/8, ::1, 10/8, 172.16/12, 192.168/16, fc00::/7, link-local).",
    )
    trusted_proxy: tuple[str, ...] = option(
        (), "--trusted-proxy", multiple=True, parse=parse_cidr, metavar="CIDR",
        commands=PROXY, default_factory=tuple, show_default="none",
        help="A proxy in front of fleet whose X-Forwarded-For/-Proto/-Host and X-Real-IP are "
             "believed and extended (repeatable; like nginx set_real_ip_from; 'unix:' for "
             "--unix-socket peers). Everyone else's are replaced. With --no-proxy: whose "
             "X-headers the workers honour besides loopback.",
    )
    allow_websocket_origin: tuple[str, ...] = option(
        (), "--allow-websocket-origin", multiple=True, parse=validate_origin_entry, metavar="HOST[:PORT]",
        commands=PROXY, default_factory=tuple,
        help="Origin allowed to open WebSockets (repeatable), with Bokeh's rules: no port means "
             ":80, '*' labels (*.example.com), '*' for any. The proxy refuses others with 403; "
             "Bokeh workers get the same list. Default: the proxy's own address.",
    )
    allow_host: tuple[str, ...] = option(
        (), "--allow-host", multiple=True, parse=validate_host_entry, metavar="HOST[:PORT]",
        commands=PROXY, default_factory=tuple,
        help="Host header (or absolute-form authority) accepted (repeatable); same rules as "
             "--allow-websocket-origin (no port means :80; HOST:* any port). Default: any.",
    )
    metrics_allow: tuple[str, ...] = option(
        DEFAULT_METRICS_ALLOW, "--metrics-allow", multiple=True, parse=parse_network, metavar="CIDR",
        commands=PROXY, show_default="loopback and private networks",
        help="Networks whose clients may see the built-in routes (/metrics, /_fleet/...) on the "
             "proxy port (repeatable; replaces the default). Others get 404, as for a path that "
             "does not exist. Use 0.0.0.0/0 and ::/0 to allow everyone.",
    )


    def trusted_proxies(self) -> tuple[str, ...]:
        """--trusted-proxy, plus loopback and private networks for the deprecated --use-xheaders."""
        if not self.use_xheaders:
            return self.trusted_proxy
        return tuple(dict.fromkeys((*self.trusted_proxy, *LOOPBACK, *PRIVATE)))


__all__ = ["TrustSettings"]
