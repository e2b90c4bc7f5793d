"""A deterministic stand-in *run outcome* (not a stand-in server): per-device claim results.

Merging is arithmetic over what a run observed, so the merge tests feed it a
known set of observations, recorded once whole and once split by shard.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.results import CHECK_NAMES, RunResults

STATUSES = ("200", "200", "200", "409", "401", "404", "503", "timeout", "connection_error")


def record_devices(indexes: Iterable[int], results: RunResults | None = None) -> RunResults:
    """Record 1..3 claims per device index with a status, latency and checks derived from it."""
    res = results or RunResults()
    for i in indexes:
        for step in range(1 + i % 3):
            status = STATUSES[(i * 7 + step) % len(STATUSES)]
            latency = 0.0005 + ((i * 37 + step * 11) % 2000) / 1000.0
            scenario = ("first_claim", "retry", "replay")[step]
            res.record_claim(scenario, status, latency, latency + (i % 5) * 0.01)
            name = CHECK_NAMES[(i + step) % len(CHECK_NAMES)]
            ok = (i * 13 + step) % 17 != 0
            res.check(name).record(ok, None if ok else {"device": f"dev{i % 4}***"})
        if i % 11 == 0:
            res.late_starts += 1
    res.duration_s = 10.0
    return res
