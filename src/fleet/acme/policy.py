"""The certificate manager's decisions, pure: its lifecycle, when to renew, how long to back
off, which challenge to try first. Values in, decisions out; the clock and the random source
are passed in, so every timer is a unit test (``tests/test_acme_policy.py``).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from fleet.statetable import StateTable


class CertState(enum.Enum):
    """Where a fleet's certificate is."""

    NONE = "none"  # nothing stored yet (or not for these names): TLS handshakes are refused
    ORDERING = "ordering"  # the first order is under way
    FAILED = "failed"  # the first order failed; waiting to try again
    VALID = "valid"  # a certificate serves; renewal is scheduled
    RENEWING = "renewing"  # an order for its successor is under way; the old one serves on
    RENEW_FAILED = "renew failed"  # the renewal failed; the old one serves on; waiting to retry


CERT_TABLE = StateTable("the ACME certificate", {
    CertState.NONE: {CertState.ORDERING, CertState.VALID},
    CertState.ORDERING: {CertState.VALID, CertState.FAILED},
    CertState.FAILED: {CertState.ORDERING, CertState.VALID},
    # VALID -> VALID: another fleet sharing the state directory renewed it first.
    CertState.VALID: {CertState.RENEWING, CertState.VALID},
    CertState.RENEWING: {CertState.VALID, CertState.RENEW_FAILED},
    CertState.RENEW_FAILED: {CertState.RENEWING, CertState.VALID},
})

# Renew at this fraction of the lifetime (Let's Encrypt's advice for 90-day certificates:
# about 30 days before expiry).
RENEW_FRACTION = 2 / 3
# A renewal time is moved earlier by up to this fraction of the lifetime, at random, so that
# fleets started together do not all ask the CA in the same second.
RENEW_JITTER = 1 / 30
RETRY_BASE = 60.0  # first retry after a failure (seconds), then doubled
RETRY_CAP = 6 * 3600.0
HTTP01 = "http-01"
TLS_ALPN01 = "tls-alpn-01"


@dataclass(frozen=True)
class Lifetime:
    """A certificate's validity, as Unix times."""

    not_before: float
    not_after: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.not_after - self.not_before)


def renewal_time(lifetime: Lifetime, rng: random.Random, ari_window: tuple[float, float] | None = None) -> float:
    """When to renew: a random moment of the CA's ARI window (RFC 9773) when it gave one, else
    about two thirds into the lifetime, a little earlier at random."""
    if ari_window is not None:
        start, end = ari_window
        if end >= start:
            return start + rng.uniform(0.0, end - start)
    base = lifetime.not_before + RENEW_FRACTION * lifetime.seconds
    return base - rng.uniform(0.0, RENEW_JITTER * lifetime.seconds)


def is_due(lifetime: Lifetime | None, now: float) -> bool:
    """A stored certificate is used as is (no order) until two thirds of its lifetime."""
    return lifetime is None or now >= lifetime.not_before + RENEW_FRACTION * lifetime.seconds


def retry_delay(failures: int, rng: random.Random, *, base: float = RETRY_BASE, cap: float = RETRY_CAP,
                lifetime: Lifetime | None = None, now: float = 0.0) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: doubled each time up to ``cap``,
    drawn from [half, all] of that (jitter: fleets refused together do not come back together).
    With a certificate still serving, never more than a quarter of the time it has left, so a
    short-lived certificate gets several tries before it expires; never less than ``base / 2``."""
    ceiling = min(cap, base * 2.0 ** max(0, failures - 1))
    if lifetime is not None:
        ceiling = min(ceiling, max(base, (lifetime.not_after - now) / 4))
    return rng.uniform(ceiling / 2, ceiling)


def challenge_order(offered: frozenset[str], http_listener: bool, last_failed: str | None = None) -> list[str]:
    """The challenges to try, first choice first, among those the CA offers.

    HTTP-01 first when fleet listens for plain HTTP (``--https-redirect-port``): answering it
    touches nothing on the TLS port, so during a renewal every TLS client keeps getting the real
    certificate, and it also works when a TLS-terminating balancer sits in front of port 443.
    TLS-ALPN-01 otherwise (no port 80 needed). After a failed validation the other one goes
    first (port 80 filtered by a firewall, say)."""
    order = [HTTP01, TLS_ALPN01] if http_listener else [TLS_ALPN01]
    if last_failed in order and len(order) > 1:
        order.remove(last_failed)
        order.append(last_failed)
    return [kind for kind in order if kind in offered]


__all__ = ["CERT_TABLE", "HTTP01", "RETRY_BASE", "TLS_ALPN01", "CertState", "Lifetime", "challenge_order",
           "is_due", "renewal_time", "retry_delay"]
