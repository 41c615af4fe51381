"""The settings fleet's built-in proxy reads: the frozen views of the sections it spans.

The proxy is the one subsystem that spans several sections (where to listen, the limits, TLS,
whom to trust), plus one option each of Logs (``--access-log``) and Bokeh (``--prefix``, the
affinity cookie's path). ``ProxyViews`` carries exactly those, built once at start by the
composition root (``fleet up``'s front, ``fleet balance``) and sent as is to each proxy process.
Nothing here is read per request: ``ProxyContext`` copies what the hot path reads into slots.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fleet.config.sections import LimitSettings, ProxySettings, TLSSettings, TrustSettings

if TYPE_CHECKING:
    from fleet.config import Config


@dataclass(frozen=True)
class ProxyViews:
    """The proxy's sections, frozen: ``frontend`` (where), ``limits``, ``tls``, ``trust``."""

    frontend: ProxySettings
    limits: LimitSettings
    tls: TLSSettings
    trust: TrustSettings
    access_log: bool = False  # --access-log (Logs)
    cookie_prefix: str | None = None  # --prefix (Bokeh): the path of the affinity cookie
    host_id: str | None = None  # --host-id (Workers): the affinity cookie names the host too

    @classmethod
    def of(cls, config: "Config") -> "ProxyViews":
        """Pick the proxy's sections out of a whole config (at start, by the composition root)."""
        return cls(config.frontend, config.limits, config.tls, config.trust,
                   access_log=config.logs.access_log, cookie_prefix=config.bokeh.prefix,
                   host_id=config.supervisor.host_id)

    def bound(self, port: int, redirect_port: int | None) -> "ProxyViews":
        """The same views with port 0 resolved (``ProxyGroup``: every process binds the same)."""
        return replace(self, frontend=replace(self.frontend, port=port),
                       tls=replace(self.tls, https_redirect_port=redirect_port))


__all__ = ["ProxyViews"]
