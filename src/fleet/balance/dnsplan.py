"""When to ask DNS again, and what a failed answer changes (pure, clock passed in).

Like HAProxy's ``server-template`` with ``resolvers``: each ``--resolve`` name is asked again
when its answer's TTL runs out, the TTL held between ``--dns-min-ttl`` (a TTL of 0 would ask
on every loop) and ``--dns-max-ttl`` (a day-long TTL would miss new hosts for a day). What it
keeps when DNS fails is the point: a timeout, SERVFAIL, an unreachable resolver, and an empty
answer (NXDOMAIN, no records) all keep the last good set of addresses, so a DNS outage never
takes every host out at once (HAProxy's ``hold``); a failure is retried sooner than a good
answer would be, backing off up to a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

Address = tuple[str, int]  # (IP, port)

MIN_TTL = 1.0
MAX_TTL = 30.0
FAILURE_RETRY_MAX = 5.0  # seconds: how far asking again backs off while DNS fails


@dataclass(frozen=True)
class TTLBounds:
    """``--dns-min-ttl`` / ``--dns-max-ttl``: how often a name is asked at most and at least."""

    min_ttl: float = MIN_TTL
    max_ttl: float = MAX_TTL

    def __post_init__(self) -> None:
        if not 0 < self.min_ttl <= self.max_ttl:
            raise ValueError(f"DNS TTL bounds need 0 < min ({self.min_ttl:g}) <= max ({self.max_ttl:g})")

    def clamp(self, ttl: float) -> float:
        return min(max(ttl, self.min_ttl), self.max_ttl)

    def retry_after(self, failures: int) -> float:
        """After ``failures`` failed asks in a row: min, 2 min, 4 min, ... up to
        ``FAILURE_RETRY_MAX`` (a DNS server that comes back is followed within seconds, not a
        whole max TTL later), never sooner than min nor later than max."""
        backoff = min(self.min_ttl * 2 ** min(max(failures - 1, 0), 16), FAILURE_RETRY_MAX)
        return min(max(backoff, self.min_ttl), self.max_ttl)


@dataclass(frozen=True)
class Answer:
    """One successful resolution: the addresses and the TTL they may be kept."""

    addresses: frozenset[Address]
    ttl: float


class Resolution:
    """One ``--resolve`` target: its last good addresses and when it is due again."""

    def __init__(self, target: str, bounds: TTLBounds) -> None:
        self.target = target
        self.bounds = bounds
        self.last_good: frozenset[Address] = frozenset()
        self.next_at = 0.0  # due at once
        self.failures = 0
        self.last_error: str | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def answered(self, answer: Answer, now: float) -> bool:
        """A good answer; True if the set of addresses changed. An empty one is a failure."""
        if not answer.addresses:
            self.failed("no address in the answer", now)
            return False
        self.failures = 0
        self.last_error = None
        self.next_at = now + self.bounds.clamp(answer.ttl)
        changed = answer.addresses != self.last_good
        self.last_good = answer.addresses
        return changed

    def failed(self, error: str, now: float) -> None:
        """No usable answer: keep the last good one, ask again sooner (backing off)."""
        self.failures += 1
        self.last_error = error
        self.next_at = now + self.bounds.retry_after(self.failures)


def wanted(resolutions: list[Resolution], static: frozenset[Address] = frozenset()) -> frozenset[Address]:
    """Every address some name (or the command line) names now: the hosts that take new sessions."""
    addresses = set(static)
    for resolution in resolutions:
        addresses |= resolution.last_good
    return frozenset(addresses)


__all__ = ["Address", "Answer", "Resolution", "TTLBounds", "wanted"]
