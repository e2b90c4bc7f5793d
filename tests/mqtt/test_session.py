"""A session's timing rules: the firmware's reconnect back-off and the refresh point."""

from __future__ import annotations

import random

from harness.mqtt.client import reason_name
from harness.mqtt.session import Tokens, backoff
from harness.mqtt.spec import RECONNECT_CAP_S, REFRESH_BUFFER_S


def test_the_reconnect_backoff_doubles_with_jitter_and_stops_at_the_firmwares_cap() -> None:
    rng = random.Random(3)
    for errors in range(12):
        base = min(2.0**errors, RECONNECT_CAP_S)
        for _ in range(200):
            wait = backoff(errors, 1.0, rng)
            assert 0.75 * base <= wait <= 1.25 * base
    assert max(backoff(40, 1.0, rng) for _ in range(100)) <= RECONNECT_CAP_S  # never over
    # A soak's time scale shrinks it.
    assert backoff(3, 0.01, rng) <= 1.25 * 8 * 0.01


def test_jitter_spreads_a_fleet_reconnecting_at_once() -> None:
    rng = random.Random(5)
    waits = {round(backoff(2, 1.0, rng), 3) for _ in range(1000)}
    assert len(waits) > 400  # not one instant for every device


def test_a_token_is_refreshed_a_minute_before_it_expires_or_at_half_life_if_shorter() -> None:
    hour = Tokens("a", "r", 3600, got_at=100.0)
    assert hour.refresh_due() == 100.0 + 3600 - REFRESH_BUFFER_S
    short = Tokens("a", "r", 40, got_at=100.0)
    assert short.refresh_due() == 120.0


def test_reason_names_are_what_the_report_counts() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    assert reason_name(ReasonCode(PacketTypes.CONNACK, identifier=0x87)) == "Not authorized"
    assert reason_name("no connection") == "no connection"
    assert reason_name(5) == "code 5"
