"""Rolling windows and latency histograms of the operator console (pure, no clock read)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from gateway.telemetry import LATENCY_BOUNDS_MS, LATENCY_MS_MAX, RollingWindow, bucket_of, merge_windows, percentile_ms, summary


def test_buckets_grow_by_a_fixed_ratio_from_fifty_microseconds_to_a_minute():
    """Each bound is 2^(1/4) above the last, from 0.05 ms; the last bound reaches a minute."""
    ratios = [b / a for a, b in zip(LATENCY_BOUNDS_MS, LATENCY_BOUNDS_MS[1:])]
    assert 0.05 == LATENCY_BOUNDS_MS[0]
    assert all(abs(r - 2 ** 0.25) < 0.01 for r in ratios)
    assert LATENCY_BOUNDS_MS[-1] >= LATENCY_MS_MAX > LATENCY_BOUNDS_MS[-2]


@given(st.lists(st.floats(min_value=0.01, max_value=50_000, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from([50, 95, 99]))
def test_a_percentile_is_never_below_the_true_one_nor_a_bucket_above_it(latencies, percent):
    """The reported percentile is the upper bound of the bucket holding the true one."""
    histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for latency in latencies:
        histogram[bucket_of(latency)] += 1
    ordered = sorted(latencies)
    rank = -(-len(ordered) * percent // 100)
    true = ordered[max(int(rank), 1) - 1]
    reported = percentile_ms(histogram, percent)
    assert true <= reported <= max(true * 2 ** 0.25, LATENCY_BOUNDS_MS[0]) + 1e-9


def test_no_samples_have_no_percentile():
    """An empty window reports None, not zero."""
    assert percentile_ms([0] * (len(LATENCY_BOUNDS_MS) + 1), 99) is None


def test_the_window_forgets_what_is_older_than_its_span():
    """Five minutes and ten seconds later, a sale no longer counts."""
    window = RollingWindow(span_s=300, bucket_s=10)
    window.add(1_000.0, "approved", 1.0)
    window.add(1_250.0, "replayed_code", 2.0)
    assert {"approved": 1, "replayed_code": 1} == window.snapshot(1_299.0)["outcomes"]
    assert {"replayed_code": 1} == window.snapshot(1_310.0)["outcomes"]
    assert {} == window.snapshot(1_560.0)["outcomes"]


def test_windows_of_several_processes_merge_exactly():
    """Merged counts and histograms are the sums of each process's."""
    one, two = RollingWindow(), RollingWindow()
    for i in range(30):
        one.add(100.0 + i, "approved", 1.0 + i)
        two.add(100.0 + i, "approved" if i % 3 else "insufficient_points", 100.0)
    merged = merge_windows([one.snapshot(130.0), two.snapshot(130.0)])
    assert {"approved": 50, "insufficient_points": 10} == merged["outcomes"]
    assert 60 == sum(merged["histogram"])
    view = summary(merged)
    assert (60, 50, 10, {"insufficient_points": 10}) == (view["total"], view["ok"], view["failed"], view["by_outcome"])
    assert 30 <= view["latency_ms"]["p50"] < 30 * 2 ** 0.25 < 100 <= view["latency_ms"]["p99"] < 100 * 2 ** 0.25


def test_outcome_names_beyond_the_limit_count_as_other():
    """A bug that invents outcome names cannot grow a slice without end."""
    window = RollingWindow()
    for i in range(100):
        window.add(5.0, f"code_{i}", 1.0)
    outcomes = window.snapshot(5.0)["outcomes"]
    assert (65, 36) == (len(outcomes), outcomes["other"])
