"""Server-side Prometheus metrics, one CollectorRegistry per app.

Per-app (not the global registry) because tests and the fleet commands run
several servers in one process and each must count only its own claims. The
four counter names are the checklist's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServerMetrics:
    """The counters and the latency histogram of one reference server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.success = Counter("claim_success", "Claims answered 200 with new tokens.", registry=r)
        self.replay_cached = Counter(
            "claim_replay_cached", "Identical retries answered from the cache.", registry=r
        )
        self.replay_conflict = Counter(
            "claim_replay_conflict", "Claims answered 409 (nonce already used).", registry=r
        )
        self.auto_register = Counter(
            "claim_auto_register", "Devices created by auto-registration.", registry=r
        )
        self.rate_limited = Counter(
            "claim_rate_limited", "Claims answered 429 by the optional rate limit.", registry=r
        )
        self.store_unavailable = Counter(
            "claim_store_unavailable",
            "Claims that met an unavailable store, by store and what the flags made of it.",
            ["store", "action"],
            registry=r,
        )
        self.claims = Counter(
            "claim_requests", "Claim requests by HTTP status.", ["status"], registry=r
        )
        self.latency = Histogram(
            "claim_request_duration_seconds",
            "Claim handling time inside the server.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._by_status = {s: self.claims.labels(str(s)) for s in (200, 401, 403, 404, 409, 422)}

    def observe_claim(self, status: int, seconds: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.claims.labels(str(status))
        child.inc()
        self.latency.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
