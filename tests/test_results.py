"""Results merge exactly: the property shards and workers rely on."""

from __future__ import annotations

import random

from harness.results import LatencyHistogram, RunResults


def _fill(res: RunResults, rng: random.Random, n: int) -> None:
    for _ in range(n):
        status = rng.choice(["200", "200", "409", "401", "timeout"])
        lat = rng.uniform(0.001, 2.0)
        res.record_claim(rng.choice(["first_claim", "idempotent_retry"]), status, lat, lat + 0.01)
        res.check("first_claim").record(status != "401", {"device_id": "Tedd***"})


def test_merge_of_parts_equals_the_whole() -> None:
    rng = random.Random(7)
    whole, parts = RunResults(), [RunResults() for _ in range(4)]
    for i in range(2000):
        status = rng.choice(["200", "409", "401", "timeout"])
        lat = rng.uniform(0.001, 2.0)
        for target in (whole, parts[i % 4]):
            target.record_claim("first_claim", status, lat)
            target.check("first_claim").record(status != "401")
    merged = RunResults()
    for p in parts:
        merged.merge(RunResults.from_dict(p.to_dict()))
    assert merged.by_status == whole.by_status
    assert merged.sent == whole.sent == 2000
    for p in (50, 95, 99, 100):
        assert merged.latency.percentile(p) == whole.latency.percentile(p)
    assert merged.checks["first_claim"].violations == whole.checks["first_claim"].violations
    assert merged.passed is whole.passed is False


def test_round_trip_keeps_every_count() -> None:
    res = RunResults()
    _fill(res, random.Random(1), 500)
    again = RunResults.from_dict(res.to_dict())
    assert again.to_dict() == res.to_dict()


def test_percentiles_have_three_significant_digits() -> None:
    h = LatencyHistogram()
    for ms in range(1, 1001):
        h.record(ms / 1000)
    assert abs(h.percentile(95) - 0.950) <= 0.950 * 0.001
    assert h.count_at_or_below(0.5) == 500


def test_error_rate_counts_network_failures_and_5xx_only() -> None:
    res = RunResults()
    for status in ("200", "409", "503", "timeout"):
        res.record_claim("first_claim", status, 0.01)
    assert res.error_rate == 0.5


def test_histogram_edges_read_while_another_thread_records() -> None:
    """A /metrics thread reads the MQTT side's histograms while the loop records: the
    read must not raise (hdrh's iterator did, and the whole scrape was a 500)."""
    import threading

    hist = LatencyHistogram()
    for i in range(5_000):
        hist.record((i % 100) / 1000)
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            hist.record(0.05)

    writer = threading.Thread(target=record)
    writer.start()
    try:
        reads = [hist.cumulative((0.01, 0.05, 0.1)) for _ in range(20)]
    finally:
        stop.set()
        writer.join()
    assert all(a <= b <= c for a, b, c in reads)
    assert all(r[0] == 550 for r in reads)  # values <= 10 ms: only the first 5,000 had them
    assert reads[-1][2] >= reads[0][2] >= 5_000
