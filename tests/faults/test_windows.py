"""Fault windows: the broker's (``mqtt``) beside the claim side's, each checked alone."""

from __future__ import annotations

import pytest

from harness.errors import HarnessInputError
from harness.faults.windows import check_windows, parse_fault


def test_the_broker_can_go_down_or_be_restarted() -> None:
    down, restart = parse_fault("mqtt:down@2s+1s"), parse_fault("mqtt:restart@5s+500ms")
    assert (down.target, down.start_s, down.duration_s) == ("mqtt", 2.0, 1.0)
    assert restart.restart and restart.text == "mqtt:restart@5s+500ms"


@pytest.mark.parametrize("text", ["mqtt:cut:200@1s+1s", "mqtt:blackhole@1s+1s"])
def test_the_broker_takes_no_proxy_modes(text: str) -> None:
    with pytest.raises(HarnessInputError, match="mqtt windows are down or restart"):
        parse_fault(text)


def test_redis_cannot_be_restarted() -> None:
    with pytest.raises(HarnessInputError, match="restart is for the server or mqtt"):
        parse_fault("redis:restart@1s+1s")


def test_a_broker_restart_may_overlap_a_redis_outage_but_not_another_broker_window() -> None:
    check_windows((parse_fault("redis:down@1s+4s"), parse_fault("mqtt:restart@2s+1s")))
    with pytest.raises(HarnessInputError, match="overlap"):
        check_windows((parse_fault("mqtt:down@1s+4s"), parse_fault("mqtt:restart@2s+1s")))
    with pytest.raises(HarnessInputError, match="overlap"):
        check_windows((parse_fault("redis:down@1s+4s"), parse_fault("postgres:down@2s+1s")))
