"""Figures over time: outcomes, violations and latency per interval, mergeable exactly.

A run's totals say how many 409s there were; the series says when. Each
interval (``STEP_S``, doubled whenever the run would need more than
``MAX_POINTS``) holds claims by status key, violations by check, and latency
from send and from schedule as sparse HDR bucket counts: the buckets of a
3-significant-digit HDR histogram (``harness.latency``), so a point costs a few
dozen integers instead of a histogram's 180 KiB, and percentiles per interval
are exactly what an HDR histogram of the interval's claims would give.

Intervals are numbered on the wall clock (``floor(unix time / step)``), so the
workers and shards of one run, on one machine or several with synchronised
clocks, fall into the same intervals and add up exactly; a coarser step is a
power-of-two multiple of a finer one, so series of different steps merge too.

``add`` only appends, for the hot path: values are bucketed ``DRAIN_EVERY`` at a
time, as ``LatencyBuffer`` does, and the run's own latency histograms are filled
from the same buckets (``flush_into``), so each latency is bucketed once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.latency import DRAIN_EVERY, add_counts, bucket_top_us, bucket_us
from harness.results import _UNIT, LatencyHistogram

STEP_S = 1.0
MAX_POINTS = 720  # 12 minutes at 1 s; a 24 h soak ends at 2-minute points


@dataclass(slots=True)
class Point:
    """One interval's figures."""

    by_status: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    latency: Counter[int] = field(default_factory=Counter)  # HDR bucket (µs) -> claims
    scheduled: Counter[int] = field(default_factory=Counter)

    def add(self, other: Point) -> None:
        self.by_status.update(other.by_status)
        self.violations.update(other.violations)
        self.latency.update(other.latency)
        self.scheduled.update(other.scheduled)


def percentile(buckets: Counter[int], p: float) -> float:
    """Seconds at percentile ``p`` of sparse HDR buckets (0.0 when empty), as ``hdrh``
    gives it: the highest value of the bucket it falls in."""
    total = sum(buckets.values())
    if not total:
        return 0.0
    want = max(1, -(-total * p // 100))  # the ceil of total * p / 100, at least 1
    seen = 0
    for value in sorted(buckets):
        seen += buckets[value]
        if seen >= want:
            return bucket_top_us(value) / _UNIT
    return bucket_top_us(max(buckets)) / _UNIT


class IntervalSeries:
    """Claims, violations and latency per interval of the wall clock."""

    __slots__ = ("_held", "_totals", "offset", "points", "step")

    def __init__(self, step: float = STEP_S) -> None:
        self.step = step
        self.points: dict[int, Point] = {}
        # monotonic -> wall clock, set once per process (time.time() - time.monotonic()).
        self.offset = time.time() - time.monotonic()
        self._held: list[tuple[float, str, float, float]] = []
        # The same buckets for the run's two histograms, until flush_into takes them: the
        # judge buckets each latency once, here, instead of once more in a LatencyBuffer.
        self._totals: tuple[dict[int, int], dict[int, int]] = ({}, {})

    # --- recording ---------------------------------------------------------------------------
    def add(self, end: float, status: str, latency: float, scheduled: float) -> None:
        """One claim over at monotonic ``end``: appended, bucketed later."""
        held = self._held
        held.append((end, status, latency, scheduled))
        if len(held) >= DRAIN_EVERY:
            self.drain()

    def violation(self, at: float, check: str) -> None:
        """One violation of ``check`` at monotonic ``at``."""
        n = len(self.points)
        self._point(at + self.offset).violations[check] += 1
        if len(self.points) != n:  # a new interval: the span may have grown past the bound
            self._bound()

    def drain(self) -> None:
        """Bucket the held claims: consecutive claims mostly share an interval, so its
        point's counters are looked up once per run of them (1.3 µs a claim, not 3.4)."""
        offset, step, points = self.offset, self.step, self.points
        total, total_sched = self._totals
        key = None
        by_status = latency = scheduled = None
        for end, status, lat, sched in self._held:
            k = int((end + offset) // step)
            if k != key:
                key = k
                point = points.get(k)
                if point is None:
                    point = points[k] = Point()
                by_status, latency, scheduled = point.by_status, point.latency, point.scheduled
            by_status[status] = by_status.get(status, 0) + 1  # type: ignore[union-attr]
            b = bucket_us(lat)
            latency[b] = latency.get(b, 0) + 1  # type: ignore[union-attr]
            total[b] = total.get(b, 0) + 1
            b = bucket_us(sched)
            scheduled[b] = scheduled.get(b, 0) + 1  # type: ignore[union-attr]
            total_sched[b] = total_sched.get(b, 0) + 1
        self._held.clear()
        self._bound()

    def flush_into(self, latency: LatencyHistogram, scheduled: LatencyHistogram) -> None:
        """Every claim drained so far into the run's two histograms (exactly as recording
        each value), once: what was flushed is not flushed again."""
        self.drain()
        for hist, counts in zip((latency, scheduled), self._totals, strict=True):
            add_counts(hist, counts)
            counts.clear()

    def _point(self, wall: float) -> Point:
        key = int(wall // self.step)
        point = self.points.get(key)
        if point is None:
            point = self.points[key] = Point()
        return point

    def _bound(self) -> None:
        while len(self.points) > 1 and self._span() > MAX_POINTS:
            self._coarsen()

    def _span(self) -> int:
        return max(self.points) - min(self.points) + 1

    def _coarsen(self) -> None:
        """Twice the step: each pair of intervals becomes one (wall-clock aligned)."""
        merged: dict[int, Point] = {}
        for key, point in self.points.items():
            target = merged.get(key // 2)
            if target is None:
                merged[key // 2] = point
            else:
                target.add(point)
        self.points = merged
        self.step *= 2

    # --- merging and the report ------------------------------------------------------------
    def merge(self, other: IntervalSeries) -> None:
        """Add ``other`` (a worker's or a shard's); the coarser step wins."""
        self.drain()
        other.drain()
        theirs = IntervalSeries(other.step)
        theirs.points = {k: _copy(p) for k, p in other.points.items()}
        while theirs.step < self.step:
            theirs._coarsen()
        while self.step < theirs.step:
            self._coarsen()
        for key, point in theirs.points.items():
            mine = self.points.get(key)
            if mine is None:
                self.points[key] = point
            else:
                mine.add(point)
        self._bound()

    def to_dict(self) -> dict[str, Any]:
        """The report's ``series``: points in time order, with their percentiles."""
        self.drain()
        points = []
        for key in sorted(self.points):
            p = self.points[key]
            points.append(
                {
                    "t": key * self.step,  # unix seconds at the interval's start
                    "by_status": dict(sorted(p.by_status.items())),
                    "violations": dict(sorted(p.violations.items())),
                    "latency_seconds": _quantiles(p.latency),
                    "latency_from_schedule_seconds": _quantiles(p.scheduled),
                    "buckets": {
                        "latency": sorted(p.latency.items()),
                        "latency_from_schedule": sorted(p.scheduled.items()),
                    },
                }
            )
        return {"step_s": self.step, "points": points}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntervalSeries:
        series = cls(float(data.get("step_s") or STEP_S))
        for item in data.get("points") or []:
            point = Point(
                Counter({str(k): int(v) for k, v in (item.get("by_status") or {}).items()}),
                Counter({str(k): int(v) for k, v in (item.get("violations") or {}).items()}),
            )
            buckets = item.get("buckets") or {}
            point.latency.update({int(b): int(n) for b, n in buckets.get("latency") or []})
            point.scheduled.update(
                {int(b): int(n) for b, n in buckets.get("latency_from_schedule") or []}
            )
            series.points[round(float(item["t"]) / series.step)] = point
        return series


def _copy(point: Point) -> Point:
    return Point(
        Counter(point.by_status),
        Counter(point.violations),
        Counter(point.latency),
        Counter(point.scheduled),
    )


def _quantiles(buckets: Counter[int]) -> dict[str, float]:
    return {f"p{p}": percentile(buckets, p) for p in (50, 95, 99)}
