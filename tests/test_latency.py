"""The latency buffer gives the very histogram that recording each value would."""

from __future__ import annotations

import random

from harness.latency import LatencyBuffer
from harness.results import LatencyHistogram


def test_buffered_histogram_equals_direct_recording() -> None:
    rng = random.Random(4)
    values = [rng.lognormvariate(-4, 1.5) for _ in range(20_000)]
    values += [0.0, 1e-7, 0.002047, 0.002048, 0.0020481, 5000.0]  # edges and clamps
    direct, buffered, buf = LatencyHistogram(), LatencyHistogram(), LatencyBuffer()
    for v in values:
        direct.record(v)
        buf.add(v)
    buf.flush_into(buffered)
    assert not buf.counts
    assert buffered.count == direct.count == len(values)
    assert buffered.encode() == direct.encode()
    for p in (50, 90, 95, 99, 99.9, 100):
        assert buffered.percentile(p) == direct.percentile(p)
    assert buffered.max == direct.max and buffered.mean == direct.mean
    assert len(buf.counts) == 0
