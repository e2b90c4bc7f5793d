"""Fault modes and their text syntax, so a CLI flag, an HTTP body and a test say the same thing.

    pass                 forward bytes both ways
    delay:200ms          forward, every chunk held that long, both directions
    drop                 accept and close at once (FIN); open connections closed too
    reset                the same with RST
    blackhole            accept, read and discard, never answer, never close
    cut:100              close the client after 100 bytes have come back from upstream
    slowclose:2s         when upstream closes, wait that long before closing the client
    ...@0.25             only that share of new connections gets the mode, the rest pass

Durations are ``250ms``, ``2s``, ``1.5s`` or a plain number of seconds. A
schedule is ``OFFSET=MODE`` steps joined by commas: ``0s=pass,5s=drop,10s=pass``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from harness.errors import HarnessInputError

_DURATION = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s)?$")
_BYTES = re.compile(r"^\d+$")


@dataclass(frozen=True)
class Mode:
    """A fault mode; ``share`` below 1 means only that fraction of new connections gets it."""

    share: float = field(default=1.0, kw_only=True)

    name: ClassVar[str] = "mode"

    @property
    def is_fault(self) -> bool:
        """False only for ``pass``, so stats can count the connections a fault touched."""
        return True

    def argument(self) -> str | None:
        """The text after ``name:``, or None for modes that take none."""
        return None

    @property
    def text(self) -> str:
        """The canonical text, which ``parse_mode`` reads back to an equal value."""
        arg = self.argument()
        body = self.name if arg is None else f"{self.name}:{arg}"
        return body if self.share >= 1.0 else f"{body}@{self.share!r}"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Pass(Mode):
    """Forward both ways untouched: the baseline every fault is compared with."""

    name: ClassVar[str] = "pass"

    @property
    def is_fault(self) -> bool:
        return False


@dataclass(frozen=True)
class Delay(Mode):
    """Hold every chunk, both directions: a slow network rather than a slow server."""

    seconds: float = 0.0
    name: ClassVar[str] = "delay"

    def argument(self) -> str:
        return format_duration(self.seconds)


@dataclass(frozen=True)
class Drop(Mode):
    """Accept and close with FIN: the service looks gone, the client sees EOF."""

    name: ClassVar[str] = "drop"


@dataclass(frozen=True)
class Reset(Mode):
    """Accept and close with RST: the client sees ``ConnectionResetError``."""

    name: ClassVar[str] = "reset"


@dataclass(frozen=True)
class Blackhole(Mode):
    """Read and discard, never answer, never close: only client timeouts end it."""

    name: ClassVar[str] = "blackhole"


@dataclass(frozen=True)
class Cut(Mode):
    """Close the client after ``nbytes`` of response: answers cut mid-body."""

    nbytes: int = 0
    name: ClassVar[str] = "cut"

    def argument(self) -> str:
        return str(self.nbytes)


@dataclass(frozen=True)
class SlowClose(Mode):
    """Keep the client open ``seconds`` after upstream closed: a lingering half-dead peer."""

    seconds: float = 0.0
    name: ClassVar[str] = "slowclose"

    def argument(self) -> str:
        return format_duration(self.seconds)


_PLAIN: dict[str, type[Mode]] = {"pass": Pass, "drop": Drop, "reset": Reset, "blackhole": Blackhole}
_WITH_ARG = ("delay", "cut", "slowclose")
MODE_NAMES = ("pass", "delay", "drop", "reset", "blackhole", "cut", "slowclose")


def format_duration(seconds: float) -> str:
    """``0.2`` -> ``200ms``, ``1.5`` -> ``1.5s``: short text that ``parse_duration`` reads back."""
    ms = round(seconds * 1000.0, 6)
    if seconds < 1.0 and ms == int(ms):
        return f"{int(ms)}ms"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def parse_duration(text: str, field_name: str = "duration") -> float:
    """Seconds from ``250ms``, ``2s``, ``1.5s`` or ``2``; negative, NaN, inf, garbage refused."""
    value = text.strip().lower()
    match = _DURATION.match(value)
    if match is None:
        if value.startswith("-"):
            raise HarnessInputError(field_name, f"{text!r}: a duration cannot be negative")
        raise HarnessInputError(
            field_name, f"{text!r} is not a duration (use e.g. 250ms, 1.5s or 2)"
        )
    seconds = float(match["num"])
    if match["unit"] == "ms":
        seconds /= 1000.0
    if not math.isfinite(seconds):
        raise HarnessInputError(field_name, f"{text!r} is not a finite duration")
    return seconds


def _parse_share(text: str, field_name: str, whole: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise HarnessInputError(
            field_name, f"{whole!r}: share {text!r} must be a fraction from 0 to 1, e.g. @0.25"
        )
    return share


def parse_mode(text: str, field_name: str = "mode") -> Mode:
    """One mode from its text (see the module docstring); one clear error on anything else."""
    whole = text.strip()
    body, at, share_text = whole.partition("@")
    share = _parse_share(share_text.strip(), field_name, whole) if at else 1.0
    name, colon, arg = body.strip().partition(":")
    name, arg = name.strip().lower(), arg.strip()
    known = ", ".join(MODE_NAMES)
    if name in _PLAIN:
        if colon:
            raise HarnessInputError(field_name, f"{whole!r}: {name!r} takes no argument")
        return _PLAIN[name](share=share)
    if name not in _WITH_ARG:
        raise HarnessInputError(field_name, f"{whole!r} is not a mode (known: {known})")
    if not arg:
        example = "cut:100" if name == "cut" else f"{name}:200ms"
        raise HarnessInputError(field_name, f"{whole!r}: {name!r} needs a value, e.g. {example}")
    if name == "cut":
        if not _BYTES.match(arg):
            raise HarnessInputError(
                field_name, f"{whole!r}: {arg!r} is not a byte count (a whole number >= 0)"
            )
        return Cut(int(arg), share=share)
    seconds = parse_duration(arg, field_name)
    return Delay(seconds, share=share) if name == "delay" else SlowClose(seconds, share=share)


def as_mode(mode: Mode | str, field_name: str = "mode") -> Mode:
    """Accept a ``Mode`` or its text, so every API takes either."""
    return mode if isinstance(mode, Mode) else parse_mode(mode, field_name)


Schedule = list[tuple[float, Mode]]


def parse_schedule(text: str, field_name: str = "schedule") -> Schedule:
    """``0s=pass,5s=drop,10s=pass`` -> [(0.0, Pass()), (5.0, Drop()), (10.0, Pass())].

    Offsets count from the schedule's start and must not go backwards, so the
    text reads as the timeline it runs.
    """
    steps: Schedule = []
    if not text.strip():
        raise HarnessInputError(field_name, "empty schedule (use e.g. 0s=pass,5s=drop,10s=pass)")
    for raw in text.split(","):
        offset_text, eq, mode_text = raw.partition("=")
        if not eq or not offset_text.strip() or not mode_text.strip():
            raise HarnessInputError(
                field_name, f"step {raw.strip()!r} is not OFFSET=MODE (e.g. 5s=drop)"
            )
        offset = parse_duration(offset_text, field_name)
        mode = parse_mode(mode_text, field_name)
        if steps and offset < steps[-1][0]:
            raise HarnessInputError(
                field_name,
                f"step {raw.strip()!r} goes back in time (after {format_duration(steps[-1][0])})",
            )
        steps.append((offset, mode))
    return steps


def format_schedule(schedule: Schedule) -> str:
    """The text ``parse_schedule`` reads back, for the start line and logs."""
    return ",".join(f"{format_duration(offset)}={mode.text}" for offset, mode in schedule)
