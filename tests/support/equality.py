"""Compare two RunResults in every count the report carries (histograms bucket by bucket)."""

from __future__ import annotations

from harness.results import LatencyHistogram, RunResults

PERCENTILES = (0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100)


def histogram_facts(h: LatencyHistogram) -> tuple[object, ...]:
    return (h.count, h.max, h.mean, tuple(h.percentile(p) for p in PERCENTILES))


def assert_same_results(a: RunResults, b: RunResults) -> None:
    assert a.sent == b.sent
    assert dict(a.by_status) == dict(b.by_status)
    assert dict(a.by_scenario) == dict(b.by_scenario)
    assert a.late_starts == b.late_starts
    assert histogram_facts(a.latency) == histogram_facts(b.latency)
    assert histogram_facts(a.latency_scheduled) == histogram_facts(b.latency_scheduled)
    assert {n: (t.evaluated, t.violations) for n, t in a.checks.items()} == {
        n: (t.evaluated, t.violations) for n, t in b.checks.items()
    }
