"""The mode text syntax: what parses, what it means, and one clear error for the rest."""

from __future__ import annotations

import pytest

from harness.errors import HarnessInputError
from harness.faults.modes import (
    Blackhole,
    Cut,
    Delay,
    Drop,
    Mode,
    Pass,
    Reset,
    SlowClose,
    format_schedule,
    parse_duration,
    parse_mode,
    parse_schedule,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("2", 2.0), ("0", 0.0), (" 0.5 ", 0.5),
     (".5s", 0.5), ("1500MS", 1.5)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["-1s", "-250ms", "nan", "inf", "infs", "1e3", "2m", "", "s", "fast"]
)
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(HarnessInputError) as info:
        parse_duration(text, "--delay")
    message = str(info.value)
    assert message.startswith("--delay: ") and repr(text) in message
    assert "\n" not in message


def test_negative_duration_says_so() -> None:
    with pytest.raises(HarnessInputError, match="negative"):
        parse_duration("-1s")


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("pass", Pass()),
        ("PASS", Pass()),
        ("delay:200ms", Delay(0.2)),
        ("delay:1.5s", Delay(1.5)),
        ("drop", Drop()),
        ("reset", Reset()),
        ("blackhole", Blackhole()),
        ("cut:100", Cut(100)),
        ("cut:0", Cut(0)),
        ("slowclose:300ms", SlowClose(0.3)),
        ("cut:100@0.25", Cut(100, share=0.25)),
        ("reset@0.5", Reset(share=0.5)),
        ("reset@1", Reset()),
        (" delay : 2 @ 0.1 ", Delay(2.0, share=0.1)),
    ],
)
def test_modes_parse(text: str, mode: Mode) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize(
    "mode",
    [Pass(), Delay(0.2), Delay(1.5), Delay(0.7), Drop(share=0.3), Reset(), Blackhole(),
     Cut(100, share=0.25), SlowClose(2.0), SlowClose(0.001), Delay(3600.25)],
)  # fmt: skip
def test_text_reads_back_to_the_same_mode(mode: Mode) -> None:
    assert parse_mode(mode.text) == mode
    assert str(mode) == mode.text


def test_canonical_text() -> None:
    assert Delay(0.2).text == "delay:200ms"
    assert Delay(1.5).text == "delay:1.5s"
    assert Cut(100, share=0.25).text == "cut:100@0.25"
    assert Reset(share=0.5).text == "reset@0.5"
    assert Pass().is_fault is False and Drop().is_fault is True


def test_modes_are_frozen_values() -> None:
    mode = Delay(0.2)
    with pytest.raises(AttributeError):
        mode.seconds = 1.0  # type: ignore[misc]
    assert mode == Delay(0.2) and mode != SlowClose(0.2)
    assert hash(mode) == hash(Delay(0.2))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("explode", "is not a mode"),
        ("", "is not a mode"),
        ("drop:5", "takes no argument"),
        ("delay", "needs a value"),
        ("delay:", "needs a value"),
        ("cut", "needs a value"),
        ("cut:-5", "not a byte count"),
        ("cut:1.5", "not a byte count"),
        ("cut:lots", "not a byte count"),
        ("delay:-1s", "negative"),
        ("delay:nan", "not a duration"),
        ("slowclose:inf", "not a duration"),
        ("reset@1.5", "fraction from 0 to 1"),
        ("reset@-0.1", "fraction from 0 to 1"),
        ("reset@nan", "fraction from 0 to 1"),
        ("reset@", "fraction from 0 to 1"),
        ("reset@0.5@0.5", "fraction from 0 to 1"),
    ],
)
def test_bad_modes_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(HarnessInputError) as info:
        parse_mode(text, "--mode")
    message = str(info.value)
    assert message.startswith("--mode: ") and needle in message
    assert "\n" not in message


def test_schedule() -> None:
    steps = parse_schedule("0s=pass, 5s=drop,10s=pass,10s=cut:100@0.25")
    assert steps == [(0.0, Pass()), (5.0, Drop()), (10.0, Pass()), (10.0, Cut(100, share=0.25))]
    assert parse_schedule(format_schedule(steps)) == steps


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty schedule"),
        ("5s", "OFFSET=MODE"),
        ("0s=pass,,5s=drop", "OFFSET=MODE"),
        ("=drop", "OFFSET=MODE"),
        ("5s=", "OFFSET=MODE"),
        ("5s=drop,1s=pass", "goes back in time"),
        ("-1s=drop", "negative"),
        ("0s=explode", "is not a mode"),
    ],
)
def test_bad_schedules(text: str, needle: str) -> None:
    with pytest.raises(HarnessInputError) as info:
        parse_schedule(text, "--schedule")
    assert str(info.value).startswith("--schedule: ") and needle in str(info.value)
