"""Outages as the fleet saw them, and the reconnect storm after each.

A soak is run to see what breaks, so the report must say what an outage cost:
when the fleet stopped getting answers, when the server answered again, how
many claims failed in between, how many resends and fresh attempts the devices
made, how many gave up for good, and how long after the server came back every
device that was hit was claiming again.

An outage is inferred from the answers, not from a declared fault, because the
fleet's view is what a rollout cares about (a declared fault window is reported
beside it): it opens at a failure (no HTTP answer, or 502/503/504) and is over
at the first answer below 500 that comes at least ``MIN_OUTAGE_S`` later.
Failures with good answers between them (a share of cut answers) are not an
outage. The tracker costs one attribute test per claim outside outages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MIN_OUTAGE_S = 0.5  # shorter stretches of failures are blips, not outages


class Outage:
    """One outage: its span, what it cost, and each hit device's way back."""

    __slots__ = ("attempts", "back", "devices", "failed", "gave_up", "recovered", "resends",
                 "started")  # fmt: skip

    def __init__(self, started: float) -> None:
        self.started = started
        self.back: float | None = None  # the first good answer after it
        self.failed = 0  # claims that failed in it
        self.devices: set[int] = set()  # devices that had a claim fail in it
        self.resends = 0  # same-body resends of those devices until they were back
        self.attempts = 0  # fresh attempts of those devices until they were back
        self.gave_up: set[int] = set()  # devices that gave up before getting an answer
        self.recovered: dict[int, float] = {}  # device -> its first good answer after it

    @property
    def settled(self) -> bool:
        return len(self.recovered) + len(self.gave_up) >= len(self.devices)

    def to_dict(self, wall: Callable[[float], float], start: float, ended: float) -> dict[str, Any]:
        """The report's view: offsets from the run's start, wall-clock times for merging.
        An outage still on when the run ended lasts until then (``still_down``)."""
        back = self.back if self.back is not None else ended
        last = max(self.recovered.values(), default=back)
        missing = len(self.devices) - len(self.recovered) - len(self.gave_up)
        return {
            "started_at": wall(self.started),
            "back_at": wall(back),
            "started_after_s": round(self.started - start, 3),
            "duration_s": round(back - self.started, 3),
            "still_down": self.back is None,
            "claims_failed": self.failed,
            "devices_hit": len(self.devices),
            "resends": self.resends,
            "fresh_attempts": self.attempts,
            "devices_gave_up": len(self.gave_up),
            "devices_not_back": missing,
            # None when a hit device never got an answer again before the run ended.
            "recovery_s": round(last - back, 3) if missing == 0 else None,
            "fully_back_at": wall(last) if missing == 0 else None,
        }


class StormTracker:
    """Feeds on every accounted claim (``failed``/``answered``) and the devices' retries."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.outages: list[Outage] = []
        self._open: Outage | None = None  # failures since the last good answer
        self._recovering: list[Outage] = []  # over, with hit devices not back yet
        self.watching = False  # anything open or recovering: good answers matter

    def failed(self, device: int, t: float) -> None:
        """A claim of ``device`` sent at ``t`` failed (no answer, or 502/503/504)."""
        o = self._open
        if o is None:
            o = self._open = Outage(t)
            self.watching = True
        o.started = min(o.started, t)  # a timeout is known late: it began when it was sent
        o.failed += 1
        o.devices.add(device)

    def answered(self, device: int, t: float) -> None:
        """A claim of ``device`` sent at ``t`` got an answer below 500 (only while watching).
        Only a claim sent after the outage began says the server is back."""
        o = self._open
        if o is not None and t > o.started:
            self._open = None
            if t - o.started >= MIN_OUTAGE_S:
                o.back = t
                self.outages.append(o)
                self._recovering.append(o)
        for r in self._recovering:
            if device in r.devices and device not in r.recovered and device not in r.gave_up:
                r.recovered[device] = t
        self._settle()

    def _settle(self) -> None:
        """Outages whose every hit device is back (or gave up) stop being watched."""
        if self._recovering:
            self._recovering = [r for r in self._recovering if not r.settled]
        self.watching = self._open is not None or bool(self._recovering)

    def retried(self, device: int, fresh: bool) -> None:
        """``device`` resent (or, ``fresh``, made a new attempt) while hit and not back."""
        for o in self._hit(device):
            if fresh:
                o.attempts += 1
            else:
                o.resends += 1

    def gave_up(self, device: int) -> None:
        for o in self._hit(device):
            o.gave_up.add(device)
        self._settle()

    def _hit(self, device: int) -> list[Outage]:
        hit = [r for r in self._recovering if device in r.devices and device not in r.recovered]
        o = self._open
        if o is not None and device in o.devices:
            hit.append(o)
        return hit

    def report(self, start: float, ended: float) -> list[dict[str, Any]]:
        """Every outage, the one still open at the end included (it never came back)."""
        offset = time.time() - self.clock()
        outages = list(self.outages)
        o = self._open
        if o is not None and ended - o.started >= MIN_OUTAGE_S:
            outages.append(o)
        return [x.to_dict(lambda t: round(t + offset, 3), start, ended) for x in outages]


def merge_outages(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outages of two workers or shards as one list: overlapping spans are one outage."""
    merged: list[dict[str, Any]] = []
    for o in sorted([*a, *b], key=lambda x: x["started_at"]):
        last = merged[-1] if merged else None
        if last is None or o["started_at"] > last["back_at"]:
            merged.append(dict(o))
            continue
        for key in ("claims_failed", "devices_hit", "resends", "fresh_attempts",
                    "devices_gave_up", "devices_not_back"):  # fmt: skip
            last[key] += o[key]
        last["back_at"] = max(last["back_at"], o["back_at"])
        last["still_down"] = bool(last.get("still_down") or o.get("still_down"))
        last["duration_s"] = round(last["back_at"] - last["started_at"], 3)
        if last["fully_back_at"] is None or o["fully_back_at"] is None:
            last["fully_back_at"] = last["recovery_s"] = None
        else:
            last["fully_back_at"] = max(last["fully_back_at"], o["fully_back_at"])
            last["recovery_s"] = round(max(0.0, last["fully_back_at"] - last["back_at"]), 3)
    return merged
