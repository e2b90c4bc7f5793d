"""k6-style pass/fail gates over a run's results: ``p95<0.5``, ``error_rate<0.01``, ``rate>100``.

The seed checklists state their release gates this way, so CI can put the
same lines on the command line (``--threshold``) and get exit code 1 when one
is missed. One small grammar, ``METRIC OP NUMBER[UNIT]``:

* latency, in seconds (from the actual send): ``p50 p90 p95 p99 p<any> max mean``;
  ``p(95)`` is accepted as k6 writes it; ``sched_`` in front (``sched_p99``)
  means latency from the *scheduled* send time, which a stalled server cannot
  hide (coordinated omission). A number may carry ``ms`` or ``s``.
* ``error_rate``: share of claims with no HTTP answer or a 5xx (0..1).
* ``rate``: claims per second over the run.
* ``claims``: claims sent; ``late_starts``: sends that started late.
* ``violations``: check violations in all; ``checks``: share of check
  evaluations that passed (``checks>=1.0`` means "every check held").
* ``status_<key>_rate`` / ``status_<key>``: share / count of one outcome,
  ``<key>`` as in ``claims.by_status`` (``status_409_rate<0.05``, ``status_timeout<1``).
* With MQTT sessions: ``mqtt_`` in front of a latency metric (``mqtt_p99<0.5``) is the
  heartbeat's send-to-observer latency, ``refresh_`` the token refresh's;
  ``mqtt_reconnect_s`` is the slowest broker loss's time until every device was back
  (a loss some devices never came back from has no such time, and fails the gate).

Operators: ``<  <=  >  >=  ==``. A latency gate over a run without claims fails
(there is nothing that meets it), rather than passing on a 0.0.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessInputError
from harness.results import LatencyHistogram, RunResults

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}
_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_().]*)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s)?\s*$"
)
_PERCENTILE = re.compile(r"^p(?:\((?P<a>\d+(?:\.\d+)?)\)|(?P<b>\d+(?:\.\d+)?))$")
# A status key is what ``claims.by_status`` can hold: an HTTP code or a silence. Anything
# else (``status_timout``) would measure a key that never occurs and pass forever.
_STATUS = re.compile(r"^status_(?P<key>[1-5][0-9][0-9]|timeout|connection_error)(?P<rate>_rate)?$")
_PLAIN = ("error_rate", "rate", "claims", "late_starts", "violations", "checks", "mqtt_reconnect_s")
_LATENCY_PREFIXES = ("sched_", "mqtt_", "refresh_")
_KNOWN = (
    "p50 p90 p95 p99 p<N> max mean (sched_, mqtt_ or refresh_ prefix), "
    + ", ".join(_PLAIN)
    + (", status_<key>[_rate] (key: an HTTP code 100..599, timeout, connection_error)")
)


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed gate. ``metric`` is canonical (``p95``, ``sched_p99``, ``status_409_rate``)."""

    expr: str
    metric: str
    op: str
    limit: float

    @property
    def is_latency(self) -> bool:
        if self.metric == "mqtt_reconnect_s":
            return True  # seconds: it takes ms/s units like the latencies
        base = self.metric
        for prefix in _LATENCY_PREFIXES:
            base = base.removeprefix(prefix)
        return base in ("max", "mean") or base.startswith("p")

    def holds(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.limit)


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    """A gate against one run: what was observed and whether the gate held."""

    threshold: Threshold
    observed: float | None
    passed: bool
    note: str = ""

    @property
    def name(self) -> str:
        return self.threshold.expr

    def to_dict(self) -> dict[str, Any]:
        """The report's ``thresholds`` entry (JUnit reads the same keys)."""
        return {
            "name": self.threshold.expr,
            "metric": self.threshold.metric,
            "op": self.threshold.op,
            "limit": self.threshold.limit,
            "observed": self.observed,
            "passed": self.passed,
            "note": self.note,
        }


def parse_threshold(expr: str) -> Threshold:
    """Parse ``METRIC OP NUMBER[ms|s]``; anything else is one ``HarnessInputError`` saying why."""
    field = f"--threshold {expr!r}"
    if not isinstance(expr, str) or not expr.strip():
        raise HarnessInputError("--threshold", "empty expression (want e.g. p95<0.5)")
    m = _EXPR.match(expr)
    if m is None:
        if not re.search(r"<=|>=|==|<|>", expr):
            reason = "no comparison operator (use < <= > >= ==), e.g. p95<0.5"
        else:
            reason = "want METRIC OP NUMBER, e.g. p95<0.5 or error_rate<0.01"
        raise HarnessInputError(field, reason)
    metric = _canonical_metric(m["metric"], field)
    limit = float(m["number"])
    if not math.isfinite(limit):
        raise HarnessInputError(field, "the limit must be a finite number")
    unit = m["unit"]
    latency = Threshold(expr, metric, m["op"], limit).is_latency
    if unit and not latency:
        raise HarnessInputError(field, f"unit {unit!r} only applies to latency metrics")
    if unit == "ms":
        limit /= 1000.0
    if metric.endswith("rate") and metric != "rate" and not 0.0 <= limit <= 1.0:
        raise HarnessInputError(field, f"{metric} is a share between 0 and 1, got {limit:g}")
    if metric == "checks" and not 0.0 <= limit <= 1.0:
        raise HarnessInputError(field, f"checks is a share between 0 and 1, got {limit:g}")
    return Threshold(expr.strip(), metric, m["op"], limit)


def parse_thresholds(exprs: Iterable[str]) -> list[Threshold]:
    """All of a command line's ``--threshold`` options, failing on the first bad one."""
    return [parse_threshold(e) for e in exprs]


def _canonical_metric(raw: str, field: str) -> str:
    name = raw.lower()
    prefix = ""
    if name in _PLAIN:
        return name
    for lead in _LATENCY_PREFIXES:
        if name.startswith(lead):
            prefix, name = lead, name.removeprefix(lead)
            break
    if name in ("max", "mean"):
        return prefix + name
    pm = _PERCENTILE.match(name)
    if pm:
        value = float(pm["a"] or pm["b"])
        if not 0.0 < value <= 100.0:
            raise HarnessInputError(field, f"percentile {value:g} outside (0, 100]")
        return f"{prefix}p{value:g}"
    if prefix:
        raise HarnessInputError(field, f"{prefix} only applies to latency metrics, not {name!r}")
    if name in _PLAIN:
        return name
    if _STATUS.match(name):
        return name
    if name.startswith("status_"):
        raise HarnessInputError(
            field,
            f"unknown status key in {raw!r} (an HTTP code 100..599, timeout or connection_error)",
        )
    raise HarnessInputError(field, f"unknown metric {raw!r} (known: {_KNOWN})")


def observe(metric: str, results: RunResults) -> tuple[float | None, str]:
    """The value of a canonical metric in ``results``; None (with why) when there is none."""
    if metric.startswith("sched_"):
        return _latency(metric.removeprefix("sched_"), results.latency_scheduled)
    mqtt = results.mqtt
    if metric.startswith(("mqtt_", "refresh_")):
        if mqtt is None:
            return None, "the run had no MQTT sessions"
        if metric == "mqtt_reconnect_s":
            backs = [r.get("back_after_s") for r in mqtt.reconnects]
            if not backs:
                return None, "no broker loss in the run"
            if None in backs:
                return None, "some devices never came back"
            return float(max(backs)), ""
        if metric.startswith("mqtt_"):
            return _latency(metric.removeprefix("mqtt_"), mqtt.heartbeat_latency)
        return _latency(metric.removeprefix("refresh_"), mqtt.refresh_latency)
    if metric in ("max", "mean") or _PERCENTILE.match(metric):
        return _latency(metric, results.latency)
    if metric == "error_rate":
        return results.error_rate, ""
    if metric == "rate":
        if results.duration_s <= 0:
            return None, "run duration unknown"
        return results.sent / results.duration_s, ""
    if metric == "claims":
        return float(results.sent), ""
    if metric == "late_starts":
        return float(results.late_starts), ""
    if metric == "violations":
        return float(sum(t.violations for t in results.checks.values())), ""
    if metric == "checks":
        evaluated = sum(t.evaluated for t in results.checks.values())
        if not evaluated:
            return None, "no check was evaluated"
        violations = sum(t.violations for t in results.checks.values())
        return 1.0 - violations / evaluated, ""
    sm = _STATUS.match(metric)
    if sm:
        count = results.by_status.get(sm["key"], 0)
        if sm["rate"]:
            if not results.sent:
                return None, "no claims sent"
            return count / results.sent, ""
        return float(count), ""
    raise HarnessInputError("threshold", f"unknown metric {metric!r}")


def _latency(metric: str, hist: LatencyHistogram) -> tuple[float | None, str]:
    if not hist.count:
        return None, "no latency recorded"
    if metric == "max":
        return hist.max, ""
    if metric == "mean":
        return hist.mean, ""
    return hist.percentile(float(metric[1:])), ""


def evaluate(thresholds: Iterable[Threshold], results: RunResults) -> list[ThresholdResult]:
    """Each gate against the run; a gate with nothing to measure fails and says why."""
    out = []
    for th in thresholds:
        observed, note = observe(th.metric, results)
        passed = observed is not None and th.holds(observed)
        out.append(ThresholdResult(th, observed, passed, note))
    return out
