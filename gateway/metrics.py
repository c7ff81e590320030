"""Prometheus metrics of one gateway process (each worker serves its own)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Authorisations take about a millisecond on loopback; the buckets reach to the
# terminal's timeout so a stall shows in the top bucket instead of vanishing.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LABEL_SETS_KEPT_MAX = 10_000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pointgate_requests", "HTTP requests by route and outcome",
            ["route", "method", "status", "outcome"], registry=self.registry,
        )
        self.request_latency = Histogram(
            "pointgate_request_duration_seconds", "HTTP request latency by route",
            ["route"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.authorisation_latency = Histogram(
            "pointgate_authorisation_duration_seconds", "time to decide one sale (after signature and validation)",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.declines = Counter("pointgate_declines", "declined sales by reason", ["reason"], registry=self.registry)
        self.journal_lag = Gauge("pointgate_journal_consumer_lag", "journal entries the views have not applied yet",
                                 registry=self.registry)
        self.journal_pending = Gauge("pointgate_journal_consumer_pending",
                                     "journal entries read by a consumer and not yet acknowledged", registry=self.registry)

        self._children: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, outcome: str, elapsed_s: float) -> None:
        children = self._children.get((route, method, status, outcome))
        if children is None:
            # labels() takes a lock and builds its key on every call; a request's own pair is kept
            # (routes, statuses and outcome codes are the gateway's own; methods a client's, so bounded).
            children = (self.requests.labels(route, method, str(status), outcome or "none"),
                        self.request_latency.labels(route))
            if len(self._children) < LABEL_SETS_KEPT_MAX:
                self._children[(route, method, status, outcome)] = children
        children[0].inc()
        children[1].observe(elapsed_s)

    def authorisation(self, elapsed_s: float, outcome: str) -> None:
        self.authorisation_latency.observe(elapsed_s)
        if outcome != "approved":
            self.declines.labels(outcome).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
