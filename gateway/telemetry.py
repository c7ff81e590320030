"""Rolling windows of outcomes and latencies, for the operator console.

Pure: every function takes `now_s` as an argument; nothing here reads a clock
or does I/O. One gateway process keeps one `RollingWindow` of its sales and
one per partner network it calls; the console merges the windows of every
process (`merge_windows`), so what it shows is the whole gateway's, not one
worker's.

Latencies go into a histogram of logarithmic buckets (each bound 2^(1/4),
about 19 %, above the last), so windows of many processes merge exactly by
adding counts, and a percentile is read off the merged histogram to within
one bucket (the bucket's upper bound is reported: a percentile is never
understated). Prometheus' `histogram_quantile` does the same with coarser
buckets.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

LATENCY_MS_MIN = 0.05
"""The lowest bucket bound: a loopback authorisation takes about a millisecond."""
LATENCY_MS_MAX = 60_000.0
"""Beyond a minute everything lands in the top bucket; no terminal waits that long."""
BUCKETS_PER_DOUBLING = 4
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(
    round(LATENCY_MS_MIN * 2 ** (i / BUCKETS_PER_DOUBLING), 4)
    for i in range(math.ceil(BUCKETS_PER_DOUBLING * math.log2(LATENCY_MS_MAX / LATENCY_MS_MIN)) + 1)
)
"""Upper bounds of the buckets (81 of them); one more bucket holds everything above the last."""

WINDOW_SPAN_S = 300
"""What the console counts: the last five minutes, long enough to see a trend, short enough to see a change."""
WINDOW_BUCKET_S = 10
"""The window moves in steps of ten seconds (30 slices of five minutes)."""
OUTCOMES_PER_SLICE_MAX = 64
"""Distinct outcome names kept per slice; decline codes are a fixed list well under this, so only
a bug could produce more, and then they are counted as `other` instead of growing without end."""


def bucket_of(latency_ms: float) -> int:
    """The index of the histogram bucket that counts `latency_ms`."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def percentile_ms(histogram: Sequence[int], percent: float) -> float | None:
    """The upper bound of the bucket holding the `percent`-th percentile; None for no samples.
    The top bucket (above LATENCY_MS_MAX) reports LATENCY_MS_MAX."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = math.ceil(total * percent / 100)
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= max(rank, 1):
            return LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)]
    raise AssertionError("the ranks add up to the total")


@dataclass
class Slice:
    """One WINDOW_BUCKET_S of the window: counts by outcome and a latency histogram."""

    start_s: int
    outcomes: dict[str, int] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))


class RollingWindow:
    """Counts by outcome and latencies of the last `span_s` seconds, in slices of `bucket_s`."""

    def __init__(self, span_s: int = WINDOW_SPAN_S, bucket_s: int = WINDOW_BUCKET_S) -> None:
        if span_s % bucket_s:
            raise ValueError("the span must be a whole number of slices")
        self.span_s, self.bucket_s = span_s, bucket_s
        self._slices: list[Slice] = []

    def add(self, now_s: float, outcome: str, latency_ms: float) -> None:
        start_s = int(now_s) // self.bucket_s * self.bucket_s
        if not self._slices or self._slices[-1].start_s != start_s:
            self._slices.append(Slice(start_s))
            self._expire(now_s)
        current = self._slices[-1]
        if outcome not in current.outcomes and len(current.outcomes) >= OUTCOMES_PER_SLICE_MAX:
            outcome = "other"
        current.outcomes[outcome] = current.outcomes.get(outcome, 0) + 1
        current.histogram[bucket_of(latency_ms)] += 1

    def _expire(self, now_s: float) -> None:
        oldest_s = int(now_s) // self.bucket_s * self.bucket_s - self.span_s + self.bucket_s
        while self._slices and self._slices[0].start_s < oldest_s:
            self._slices.pop(0)

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """The window as plain data (JSON-ready): `outcomes` summed, `histogram` summed."""
        self._expire(now_s)
        outcomes: dict[str, int] = {}
        histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for piece in self._slices:
            for name, count in piece.outcomes.items():
                outcomes[name] = outcomes.get(name, 0) + count
            for index, count in enumerate(piece.histogram):
                histogram[index] += count
        return {"span_s": self.span_s, "outcomes": outcomes, "histogram": histogram}


def merge_windows(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several processes' `snapshot()`s as one: counts and histograms added."""
    outcomes: dict[str, int] = {}
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    span_s = WINDOW_SPAN_S
    for snapshot in snapshots:
        span_s = int(snapshot.get("span_s", span_s))
        for name, count in snapshot.get("outcomes", {}).items():
            outcomes[str(name)] = outcomes.get(str(name), 0) + int(count)
        for index, count in enumerate(snapshot.get("histogram", ())[:len(histogram)]):
            histogram[index] += int(count)
    return {"span_s": span_s, "outcomes": outcomes, "histogram": histogram}


def summary(window: Mapping[str, Any], ok_outcomes: frozenset[str] = frozenset({"approved"})) -> dict[str, Any]:
    """What the console shows of a (merged) window: totals, failures by outcome, percentiles."""
    outcomes = dict(window.get("outcomes", {}))
    histogram = list(window.get("histogram", ()))
    total = sum(outcomes.values())
    ok = sum(count for name, count in outcomes.items() if name in ok_outcomes)
    failures = {name: count for name, count in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
                if name not in ok_outcomes}
    return {
        "span_s": window.get("span_s", WINDOW_SPAN_S), "total": total, "ok": ok, "failed": total - ok,
        "by_outcome": failures,
        "latency_ms": {"p50": percentile_ms(histogram, 50), "p95": percentile_ms(histogram, 95),
                       "p99": percentile_ms(histogram, 99)},
    }
