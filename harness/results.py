"""Mergeable run results: counts, HDR latency histograms and check tallies.

Everything here merges exactly (counters add, HDR histograms add), so worker
processes and Kubernetes shards combine into the same numbers a single process
would have produced; percentiles are never averaged.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from hdrh.iterators import HdrConcurrentModificationException

from harness.storm import merge_outages

# Latencies are recorded in microseconds, 1 us .. 1 h, 3 significant digits.
_UNIT = 1_000_000
_LOWEST, _HIGHEST, _DIGITS = 1, 3_600 * _UNIT, 3

# The checks every report carries (issue: fleet). Order is report order.
CHECK_NAMES: tuple[str, ...] = (
    "first_claim",
    "idempotent_retry",
    "concurrent_retry",
    "replay_conflict",
    "case_insensitive_id",
    "hmac_normalization",
    "auto_register",
    "validation",
    "token_claims",
    "correlation_id",
)
# Status keys that are not HTTP codes.
TIMEOUT, CONNECTION_ERROR = "timeout", "connection_error"
MAX_EXAMPLES = 5


class LatencyHistogram:
    """An HDR histogram of seconds with exact merge and 3-significant-digit percentiles."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = HdrHistogram(_LOWEST, _HIGHEST, _DIGITS)

    def record(self, seconds: float) -> None:
        us = round(seconds * _UNIT)
        self._h.record_value(min(max(us, _LOWEST), _HIGHEST))

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, p: float) -> float:
        """Seconds at percentile ``p`` (0..100); 0.0 when empty."""
        if not self.count:
            return 0.0
        return self._h.get_value_at_percentile(p) / _UNIT

    @property
    def max(self) -> float:
        return self._h.get_max_value() / _UNIT if self.count else 0.0

    @property
    def mean(self) -> float:
        return self._h.get_mean_value() / _UNIT if self.count else 0.0

    def merge(self, other: LatencyHistogram) -> None:
        if other.count:
            self._h.add(other._h)

    def count_at_or_below(self, seconds: float) -> int:
        """How many recorded values were <= ``seconds`` (for Prometheus-style buckets)."""
        return self.cumulative((seconds,))[0]

    def cumulative(self, edges: Sequence[float]) -> list[int]:
        """How many recorded values were <= each of ``edges`` (ascending), in one pass.

        A ``/metrics`` thread reads histograms the event loop records into (the MQTT
        side's): hdrh's iterator then raises, so the pass is taken again on a copy
        (encoding reads the counts without that check). Found by the Grafana test: a
        live scrape of a run with sessions failed with a 500.
        """
        if not self.count:
            return [0] * len(edges)
        try:
            return self._cumulative(edges)
        except HdrConcurrentModificationException:
            return LatencyHistogram.decode(self.encode())._cumulative(edges)

    def _cumulative(self, edges: Sequence[float]) -> list[int]:
        limits = [int(e * _UNIT) for e in edges]
        out = [0] * len(edges)
        h = self._h
        for item in h.get_recorded_iterator():
            value = h.get_lowest_equivalent_value(item.value_iterated_to)
            n = item.count_added_in_this_iter_step
            for i, limit in enumerate(limits):
                if value <= limit:
                    out[i] += n
        return out

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "max": self.max,
            "mean": self.mean,
            "count": self.count,
        }

    def encode(self) -> str:
        """Compressed, base64 HDR encoding (the format HdrHistogram tools read)."""
        if not self.count:
            return ""
        raw = self._h.encode()
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        hist = cls()
        if text:
            base64.b64decode(text, validate=True)  # a clear error on garbage before hdrh sees it
            hist._h = HdrHistogram.decode(text)
        return hist


@dataclass(slots=True)
class CheckTally:
    """One named check: how often it was evaluated, how often it was violated, a few examples."""

    name: str
    evaluated: int = 0
    violations: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.violations == 0

    def record(self, ok: bool, example: dict[str, Any] | None = None) -> None:
        """Count one evaluation; ``example`` must already be masked (see harness.masking)."""
        self.evaluated += 1
        if not ok:
            self.violations += 1
            if example is not None and len(self.examples) < MAX_EXAMPLES:
                self.examples.append(example)

    def merge(self, other: CheckTally) -> None:
        self.evaluated += other.evaluated
        self.violations += other.violations
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "evaluated": self.evaluated,
            "violations": self.violations,
            "examples": list(self.examples),
        }


@dataclass(slots=True)
class RunResults:
    """What a run observed. Every claim sent is counted exactly once in ``by_status``.

    ``by_status`` keys are the HTTP status as a string (``"200"``, ``"429"``) or
    ``"timeout"`` / ``"connection_error"``; ``by_scenario`` counts the same
    claims per (scenario, status key) pair so the two always add up alike.
    """

    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_scenario: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    latency_scheduled: LatencyHistogram = field(default_factory=LatencyHistogram)
    late_starts: int = 0
    checks: dict[str, CheckTally] = field(
        default_factory=lambda: {n: CheckTally(n) for n in CHECK_NAMES}
    )
    duration_s: float = 0.0
    # The run's other figures, here so that they merge once with the rest: counts the
    # server-counter cross-check needs (harness.metrics EXTRA_* names), first answers per
    # (cohort, status key), and the token checks (harness.judge).
    extra: Counter[str] = field(default_factory=Counter)
    by_cohort: Counter[tuple[str, str]] = field(default_factory=Counter)
    tokens_checked: int = 0
    token_signatures_verified: int = 0
    tokens_cross_checked: int = 0
    # Outages the fleet saw and each reconnect storm (harness.storm), wall-clock times.
    outages: list[dict[str, Any]] = field(default_factory=list)
    # The MQTT side's figures (harness.mqtt.stats.MqttStats), when devices went online.
    mqtt: Any = None
    # Claims, violations and latency per interval (harness.series.IntervalSeries).
    series: Any = None

    def record_claim(
        self, scenario: str, status: str, latency_s: float, scheduled_latency_s: float | None = None
    ) -> None:
        """Account for one claim sent, whatever came back."""
        self.sent += 1
        self.by_status[status] += 1
        self.by_scenario[(scenario, status)] += 1
        self.latency.record(latency_s)
        self.latency_scheduled.record(
            latency_s if scheduled_latency_s is None else scheduled_latency_s
        )

    def judged(self, name: str, ok: bool, example: dict[str, Any] | None = None) -> None:
        """One evaluation of check ``name`` (``example``: masked, kept when it failed)."""
        self.check(name).record(ok, example)

    def check(self, name: str) -> CheckTally:
        tally = self.checks.get(name)
        if tally is None:
            tally = self.checks[name] = CheckTally(name)
        return tally

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.checks.values())

    @property
    def error_rate(self) -> float:
        """Share of claims that got no HTTP answer or a 5xx (server or network failure)."""
        if not self.sent:
            return 0.0
        bad = sum(n for k, n in self.by_status.items() if not k.isdigit() or k.startswith("5"))
        return bad / self.sent

    def merge(self, other: RunResults) -> None:
        self.sent += other.sent
        self.by_status.update(other.by_status)
        self.by_scenario.update(other.by_scenario)
        self.latency.merge(other.latency)
        self.latency_scheduled.merge(other.latency_scheduled)
        self.late_starts += other.late_starts
        for name, tally in other.checks.items():
            self.check(name).merge(tally)
        self.duration_s = max(self.duration_s, other.duration_s)
        self.extra.update(other.extra)
        self.by_cohort.update(other.by_cohort)
        self.tokens_checked += other.tokens_checked
        self.token_signatures_verified += other.token_signatures_verified
        self.tokens_cross_checked += other.tokens_cross_checked
        self.outages = merge_outages(self.outages, other.outages)
        if other.series is not None:
            if self.series is None:
                from harness.series import IntervalSeries  # it imports this module

                self.series = IntervalSeries()
            self.series.merge(other.series)
        if other.mqtt is not None:
            if self.mqtt is None:
                from harness.mqtt.stats import MqttStats  # the MQTT side imports this module

                self.mqtt = MqttStats()
            self.mqtt.merge(other.mqtt)

    def to_dict(self) -> dict[str, Any]:
        """The report's data part (the report module adds run metadata and thresholds)."""
        return {
            "passed": self.passed,
            "claims": {
                "sent": self.sent,
                "by_status": dict(sorted(self.by_status.items())),
                "by_scenario": {f"{s}|{k}": n for (s, k), n in sorted(self.by_scenario.items())},
                "late_starts": self.late_starts,
                "error_rate": self.error_rate,
                "per_second": self.sent / self.duration_s if self.duration_s else 0.0,
            },
            "duration_s": self.duration_s,
            "latency_seconds": self.latency.summary(),
            "latency_from_schedule_seconds": self.latency_scheduled.summary(),
            "checks": [t.to_dict() for t in self.checks.values()],
            "histograms": {
                "latency": self.latency.encode(),
                "latency_from_schedule": self.latency_scheduled.encode(),
            },
            "token_checks": {
                "tokens_checked": self.tokens_checked,
                "signatures_verified": self.token_signatures_verified,
                "pyjwt_cross_checked": self.tokens_cross_checked,
            },
            "extra": dict(sorted(self.extra.items())),
            "by_cohort": _by_cohort(self.by_cohort),
            "outages": [dict(o) for o in self.outages],
            **({"mqtt": self.mqtt.to_dict()} if self.mqtt is not None else {}),
            **({"series": self.series.to_dict()} if self.series is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        """Rebuild from ``to_dict`` output (for merging shard reports exactly)."""
        claims = data["claims"]
        res = cls(
            sent=int(claims["sent"]),
            by_status=Counter({str(k): int(v) for k, v in claims["by_status"].items()}),
            by_scenario=Counter(
                {tuple(k.split("|", 1)): int(v) for k, v in claims.get("by_scenario", {}).items()}
            ),
            late_starts=int(claims.get("late_starts", 0)),
            duration_s=float(data.get("duration_s", 0.0)),
        )
        hists = data.get("histograms", {})
        res.latency = LatencyHistogram.decode(hists.get("latency", ""))
        res.latency_scheduled = LatencyHistogram.decode(hists.get("latency_from_schedule", ""))
        tokens = data.get("token_checks") or {}
        res.tokens_checked = int(tokens.get("tokens_checked") or 0)
        res.token_signatures_verified = int(tokens.get("signatures_verified") or 0)
        res.tokens_cross_checked = int(tokens.get("pyjwt_cross_checked") or 0)
        res.extra = Counter({str(k): int(v) for k, v in (data.get("extra") or {}).items()})
        res.by_cohort = Counter(
            {
                (str(cohort), str(status)): int(n)
                for cohort, statuses in (data.get("by_cohort") or {}).items()
                for status, n in statuses.items()
            }
        )
        res.outages = [dict(o) for o in data.get("outages") or []]
        if data.get("series"):
            from harness.series import IntervalSeries  # it imports this module

            res.series = IntervalSeries.from_dict(data["series"])
        if data.get("mqtt"):
            from harness.mqtt.stats import MqttStats  # the MQTT side imports this module

            res.mqtt = MqttStats.from_dict(data["mqtt"])
        res.checks = {}
        for item in data.get("checks", []):
            res.checks[item["name"]] = CheckTally(
                item["name"],
                int(item.get("evaluated", 0)),
                int(item["violations"]),
                list(item.get("examples", [])),
            )
        return res


def _by_cohort(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (cohort, status), n in sorted(counts.items()):
        out.setdefault(cohort, {})[status] = n
    return out
