"""The Limits section of fleet's settings.

Every bound on a client connection and its requests, in time and in memory (the README's Limits
table explains each). Read by the proxy (``config.limits``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.declare import PROXY, option
from fleet.values import KIB, MIB, parse_count, parse_duration, parse_positive_int, parse_size


@dataclass(frozen=True)
class LimitSettings:
    """The Limits section (``config.limits``); frozen."""

    max_body_size: int = option(
        100 * MIB, "--max-body-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="100MiB", help="Largest request body accepted (413 above).",
    )
    max_header_size: int = option(
        64 * KIB, "--max-header-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="64KiB", help="Largest request head accepted (431 above).",
    )
    upstream_timeout: float = option(
        60.0, "--upstream-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="A worker that sends no response head within this time gets a 504.",
    )
    client_timeout: float = option(
        75.0, "--client-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a keep-alive client connection idle for this long.",
    )
    header_timeout: float = option(
        30.0, "--header-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a client that has not sent a whole request head within this time.",
    )
    max_connections: int = option(
        10000, "--max-connections", parse=parse_count, metavar="N", commands=PROXY,
        help="Open client connections at most; past it the proxy stops accepting (clients wait "
             "in the listen backlog, like HAProxy maxconn) until one closes. 0: no limit.",
    )
    max_connections_per_ip: int = option(
        0, "--max-connections-per-ip", parse=parse_count, metavar="N", commands=PROXY,
        show_default="0: no limit",
        help="Open connections per client address; more are closed at once (like nginx "
             "limit_conn). Off by default: behind another proxy every client has its address.",
    )
    max_header_count: int = option(
        100, "--max-header-count", parse=parse_positive_int, metavar="N", commands=PROXY,
        help="Most header fields in a request head (431 above), like Apache LimitRequestFields.",
    )
    max_trailer_size: int = option(
        8 * KIB, "--max-trailer-size", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="8KiB",
        help="Largest trailer section of a chunked request body (431 above). Trailers are not "
             "forwarded to workers.",
    )
    max_buffered_request: int = option(
        256 * KIB, "--max-buffered-request", parse=parse_size, metavar="SIZE", commands=PROXY,
        show_default="256KiB",
        help="Request bytes held per connection while they cannot go to a worker yet (waiting "
             "for one, or pipelined behind another request); past it the client is not read.",
    )
    min_body_rate: int = option(
        500, "--min-body-rate", parse=parse_count, metavar="BYTES_PER_S", commands=PROXY,
        help="After --client-timeout seconds of a request body, it must have averaged at least "
             "this many bytes/s (408 otherwise), like Apache mod_reqtimeout MinRate. 0: off.",
    )
    websocket_idle_timeout: float = option(
        3600.0, "--websocket-idle-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="Close a WebSocket with no byte either way for this long (keep above Bokeh's "
             "--keep-alive ping interval).",
    )
    queue_timeout: float = option(
        10.0, "--queue-timeout", parse=parse_duration, metavar="SECONDS", commands=PROXY,
        help="When no worker can take a request (none ready, or all at --worker-max-conns), it "
             "waits this long for one, then gets 503 (HAProxy timeout queue). 0: 503 at once.",
    )
    worker_max_conns: int = option(
        0, "--worker-max-conns", parse=parse_count, metavar="N", commands=PROXY,
        show_default="0: no cap",
        help="In-flight HTTP requests per worker at most (WebSockets do not count); more wait "
             "in the queue (HAProxy server maxconn).",
    )


__all__ = ["LimitSettings"]
