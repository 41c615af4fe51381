"""The proxy's counters: plain integers bumped on the hot path, read at scrape time.

Why not prometheus-client objects directly: ``Counter.labels(...).inc()`` takes a lock and
a dict lookup per call, which measurably slows a proxy that handles tens of thousands of
requests per second. The balancer updates these fields (single-threaded, on the event loop);
``fleet.metrics`` turns them into Prometheus families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds (seconds) of fleet_request_duration_seconds; +Inf is implicit (last slot).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
_FIRST_BUCKET = DURATION_BUCKETS[0]


@dataclass
class UpstreamStats:
    """Counters for one upstream (worker ``w0``, ``w1``, ...)."""

    worker_id: str
    requests: dict[tuple[str, int], int] = field(default_factory=dict)  # (method, code) -> count
    duration_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    active_requests: int = 0
    websockets: int = 0
    connect_errors: int = 0

    def record_response(self, method: str, code: int, seconds_to_head: float) -> None:
        key = (method, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        # Most heads come within the first bucket's bound: no bisect call for them.
        self.duration_counts[0 if seconds_to_head <= _FIRST_BUCKET else bisect_left(DURATION_BUCKETS, seconds_to_head)] += 1
        self.duration_sum += seconds_to_head

    @property
    def load(self) -> int:
        """What least-connections compares: in-flight HTTP requests plus open WebSockets."""
        return self.active_requests + self.websockets

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())


@dataclass
class ProxyStats:
    """Every counter of one proxy; ``upstreams`` keeps an entry even after a worker leaves."""

    upstreams: dict[str, UpstreamStats] = field(default_factory=dict)
    retries: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)  # reason -> count
    bytes_received: int = 0  # from clients
    bytes_sent: int = 0  # to clients
    queued: int = 0  # requests waiting for a worker now
    queue_wait_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    queue_wait_sum: float = 0.0

    def upstream(self, worker_id: str) -> UpstreamStats:
        stats = self.upstreams.get(worker_id)
        if stats is None:
            stats = self.upstreams[worker_id] = UpstreamStats(worker_id)
        return stats

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.queue_wait_sum += seconds

    def client_error(self, reason: str) -> None:
        self.client_errors[reason] = self.client_errors.get(reason, 0) + 1
