"""Latency recording at hot-path cost, exactly equal to recording each value in the HDR histogram.

``hdrh``'s ``record_value`` is pure Python and costs more than the rest of a
claim's bookkeeping. A 3-significant-digit HDR histogram keeps 11 bits of
precision (2048 sub-buckets), so values that agree in their top 11 bits land in
the same counter. ``LatencyBuffer`` rounds each value down to its bucket's
lowest equivalent value, counts it in a dict, and adds the counts to the
histogram in one pass: same counters, same percentiles, same encoding.
"""

from __future__ import annotations

from harness.results import _HIGHEST, _LOWEST, _UNIT, LatencyHistogram

_PRECISION_BITS = 11  # 3 significant digits (results._DIGITS) -> 2048 sub-buckets


class LatencyBuffer:
    """Counts latencies (seconds) by HDR bucket; ``flush_into`` adds them to a histogram."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        us = round(seconds * _UNIT)
        if us < _LOWEST:
            us = _LOWEST
        elif us > _HIGHEST:
            us = _HIGHEST
        shift = us.bit_length() - _PRECISION_BITS
        if shift > 0:
            us = (us >> shift) << shift
        counts = self.counts
        counts[us] = counts.get(us, 0) + 1

    def flush_into(self, hist: LatencyHistogram) -> None:
        """Add every buffered value to ``hist`` and empty the buffer."""
        h = hist._h  # the HDR histogram inside; record_value takes a count
        for value, n in self.counts.items():
            h.record_value(value, n)
        self.counts.clear()
