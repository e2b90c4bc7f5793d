"""The figures of a run's MQTT side: what devices did, what the observer saw.

One ``MqttStats`` per process; workers' and shards' stats merge exactly (counts
add, histograms merge bucket by bucket, reconnect episodes line up by their
window), like ``RunResults`` does for claims, and the report's ``mqtt`` section
is ``to_dict``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.results import LatencyHistogram

COUNTS = (
    "sessions_connected",  # distinct devices that went online at least once
    "sessions",  # connections accepted (a device reconnecting opens another)
    "births",  # births the observer saw (one per session expected)
    "birth_duplicates",
    "births_acked",  # births the broker acknowledged (PUBACK)
    "heartbeats_sent",  # heartbeats the broker acknowledged (PUBACK)
    "heartbeats_seen",  # distinct (device, seq) the observer saw
    "duplicates",  # heartbeats seen again (QoS 1 is at-least-once)
    "gaps",  # heartbeats acknowledged but never seen, or skipped sequence numbers
    "wills_expected",  # sessions killed without DISCONNECT
    "wills_seen",
    "pings_sent",
    "pings_answered",
    "isolation_probes",
    "isolation_refused",  # the broker refused the cross-device publish (MQTT 5 PUBACK)
    "isolation_seen",  # the observer saw a cross-device publish: the ACL let it through
    "refreshes",
    "refresh_failures",
    "refreshes_in_fault_windows",  # failed inside a claim-side fault window: not judged
    "unobserved",  # acknowledged while the observer itself was reconnecting: not judged
    "connect_attempts",
    "connection_losses",
)


@dataclass(slots=True)
class MqttStats:
    """Counts, CONNACK reason codes, latencies and reconnect episodes of one run's MQTT side."""

    counts: Counter[str] = field(default_factory=Counter)
    connacks: Counter[str] = field(default_factory=Counter)  # reason name -> connects
    refresh_outcomes: Counter[str] = field(default_factory=Counter)  # status key -> refreshes
    heartbeat_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    refresh_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Each broker loss: {"window", "down_s", "back_after_s", "connects", "devices"}.
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    broker: str = ""
    online: int = 0  # sessions connected right now (a live gauge; not merged)
    refresh_expected: str = ""  # what the profile answers a genuine refresh: "200" or v5's "401"

    def __post_init__(self) -> None:
        for key in COUNTS:
            self.counts.setdefault(key, 0)

    def merge(self, other: MqttStats) -> None:
        self.counts.update(other.counts)
        self.connacks.update(other.connacks)
        self.refresh_outcomes.update(other.refresh_outcomes)
        self.heartbeat_latency.merge(other.heartbeat_latency)
        self.refresh_latency.merge(other.refresh_latency)
        self.reconnects = merge_reconnects(self.reconnects, other.reconnects)
        self.broker = self.broker or other.broker
        self.refresh_expected = self.refresh_expected or other.refresh_expected

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.counts[k] for k in COUNTS}
        out.update(
            broker=self.broker,
            refresh_expected=self.refresh_expected,
            connacks=dict(sorted(self.connacks.items())),
            refresh_outcomes=dict(sorted(self.refresh_outcomes.items())),
            heartbeat_latency_seconds=self.heartbeat_latency.summary(),
            refresh_latency_seconds=self.refresh_latency.summary(),
            reconnects=[dict(r) for r in self.reconnects],
            histograms={
                "heartbeat_latency": self.heartbeat_latency.encode(),
                "refresh_latency": self.refresh_latency.encode(),
            },
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MqttStats:
        stats = cls(
            counts=Counter({k: int(data.get(k) or 0) for k in COUNTS}),
            connacks=Counter({str(k): int(v) for k, v in (data.get("connacks") or {}).items()}),
            refresh_outcomes=Counter(
                {str(k): int(v) for k, v in (data.get("refresh_outcomes") or {}).items()}
            ),
            reconnects=[dict(r) for r in data.get("reconnects") or []],
            broker=str(data.get("broker") or ""),
            refresh_expected=str(data.get("refresh_expected") or ""),
        )
        hists = data.get("histograms") or {}
        stats.heartbeat_latency = LatencyHistogram.decode(hists.get("heartbeat_latency", ""))
        stats.refresh_latency = LatencyHistogram.decode(hists.get("refresh_latency", ""))
        return stats


def merge_reconnects(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per broker loss: the slowest process's recovery, everyone's connects."""
    by_window: dict[str, dict[str, Any]] = {str(r.get("window")): dict(r) for r in a}
    for r in b:
        key = str(r.get("window"))
        mine = by_window.get(key)
        if mine is None:
            by_window[key] = dict(r)
            continue
        mine["connects"] = int(mine.get("connects") or 0) + int(r.get("connects") or 0)
        mine["devices"] = int(mine.get("devices") or 0) + int(r.get("devices") or 0)
        mine["not_back"] = int(mine.get("not_back") or 0) + int(r.get("not_back") or 0)
        backs = [x.get("back_after_s") for x in (mine, r)]
        mine["back_after_s"] = None if None in backs else max(backs)  # type: ignore[type-var]
    return sorted(by_window.values(), key=lambda r: float(r.get("at_s") or 0.0))
