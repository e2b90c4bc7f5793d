"""Fault windows of a soak: what goes wrong, where, from when and for how long.

Declared as ``--fault "redis:down@5s+5s"`` (repeatable) or a fleet file's
``[[faults]]`` tables (``target``, ``mode``, ``at``, ``for``). The target is a
part the harness has a fault proxy in front of: ``redis``, ``postgres`` or
``server`` (the claim server itself), or ``mqtt`` (the embedded Mosquitto of a
run with device sessions: ``down`` stops it, ``restart`` kills it, and either
way it is back after ``+D``; ``harness.mqtt.fleet`` plays these). The mode is a fault-proxy mode
(``harness.faults.modes``: ``reset``, ``blackhole``, ``cut:200@0.25`` ...), or
``down`` (the service is gone: connections reset), or, for the server,
``restart`` (stopped and started again on the same port; ``+D`` is how long it
stays down).

The oracle applies the declared profile's failure rows within each window
(``harness.faults.phases``); outside them nothing unanswered is expected.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessInputError
from harness.faults.modes import Mode, Reset, format_duration, parse_duration, parse_mode

TARGETS = ("redis", "postgres", "server", "mqtt")
CLAIM_TARGETS = ("redis", "postgres", "server")  # what the fault stage has proxies for
MAX_FAULTS = 32


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault: ``target`` in ``mode`` from ``start_s`` after the run's start, for
    ``duration_s``."""

    target: str
    mode: str  # "restart", or a fault-proxy mode's text ("down" is stored as "reset")
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def restart(self) -> bool:
        return self.mode == "restart"

    @property
    def proxy_mode(self) -> Mode:
        return parse_mode(self.mode) if not self.restart else Reset()

    @property
    def text(self) -> str:
        return (
            f"{self.target}:{self.mode}@{format_duration(self.start_s)}"
            f"+{format_duration(self.duration_s)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "mode": self.mode, "at_s": self.start_s,
                "for_s": self.duration_s, "text": self.text}  # fmt: skip


def _mode(target: str, text: str, where: str) -> str:
    low = text.strip().lower()
    if low == "down":
        return Reset().text  # the service is gone: every connection to it is refused
    if low == "restart":
        if target not in ("server", "mqtt"):
            raise HarnessInputError(where, f"restart is for the server or mqtt, not {target}")
        return "restart"
    if target == "mqtt":
        raise HarnessInputError(where, f"mqtt windows are down or restart, got {text!r}")
    return parse_mode(low, where).text


def parse_fault(text: str, where: str = "--fault") -> FaultWindow:
    """``TARGET:MODE@START+DURATION``, e.g. ``redis:down@5s+5s`` or
    ``server:cut:200@0.25@3s+4s`` (the last ``@`` starts the window)."""
    raw = str(text).strip()
    target, sep, rest = raw.partition(":")
    mode, at, span = rest.rpartition("@")
    start, plus, duration = span.partition("+")
    if not sep or not at or not plus or not mode:
        raise HarnessInputError(
            where, f"expected TARGET:MODE@START+DURATION (e.g. redis:down@5s+5s), got {raw!r}"
        )
    return fault_window(target, mode, start, duration, where)


def fault_window(target: str, mode: str, start: str, duration: str, where: str) -> FaultWindow:
    target = target.strip().lower()
    if target not in TARGETS:
        raise HarnessInputError(where, f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    begin = parse_duration(start, where)
    length = parse_duration(duration, where)
    if length <= 0:
        raise HarnessInputError(
            where, f"a fault window must last longer than 0 s, got {duration!r}"
        )
    return FaultWindow(target, _mode(target, mode, where), begin, length)


def check_windows(windows: tuple[FaultWindow, ...], where: str = "--fault") -> None:
    """At most ``MAX_FAULTS``, and one fault at a time: the oracle has one row per fault,
    and two at once (Redis and PostgreSQL, say) would need the rows combined."""
    if len(windows) > MAX_FAULTS:
        raise HarnessInputError(where, f"at most {MAX_FAULTS} fault windows, got {len(windows)}")
    _one_at_a_time([w for w in windows if w.target == "mqtt"], where)
    _one_at_a_time([w for w in windows if w.target != "mqtt"], where)


def _one_at_a_time(windows: list[FaultWindow], where: str) -> None:
    """The broker's windows and the claim side's are checked apart: a broker restart
    during a Redis outage is two parts failing, each judged by its own checks."""
    ordered = sorted(windows, key=lambda w: w.start_s)
    for a, b in itertools.pairwise(ordered):
        if b.start_s < a.end_s:
            raise HarnessInputError(where, f"{a.text} and {b.text} overlap: one fault at a time")
