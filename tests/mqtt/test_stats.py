"""MqttStats: what workers and shards merge, and what a report round-trips."""

from __future__ import annotations

from harness.mqtt.stats import MqttStats, merge_reconnects
from harness.results import RunResults


def _stats(sessions: int, latencies: list[float], back: float | None) -> MqttStats:
    s = MqttStats(broker="embedded")
    s.counts["sessions_connected"] = sessions
    s.counts["heartbeats_sent"] = 10 * sessions
    s.connacks["Success"] = sessions
    s.connacks["Not authorized"] = 1
    for x in latencies:
        s.heartbeat_latency.record(x)
    s.reconnects = [
        {
            "window": "mqtt:restart@2s+1s",
            "at_s": 2.0,
            "devices": sessions,
            "connects": 2 * sessions,
            "back_after_s": back,
            "not_back": 0,
        }
    ]
    return s


def test_two_workers_stats_add_up_and_the_slowest_recovery_wins() -> None:
    a, b = _stats(30, [0.001, 0.002], 0.8), _stats(12, [0.5], 1.4)
    a.merge(b)
    assert a.counts["sessions_connected"] == 42
    assert a.counts["heartbeats_sent"] == 420
    assert a.connacks == {"Success": 42, "Not authorized": 2}
    assert a.heartbeat_latency.count == 3
    assert a.heartbeat_latency.max >= 0.5
    [loss] = a.reconnects
    assert loss["devices"] == 42 and loss["connects"] == 84 and loss["back_after_s"] == 1.4


def test_a_worker_whose_devices_never_came_back_makes_the_merge_not_back() -> None:
    merged = merge_reconnects(
        [
            {
                "window": "w",
                "at_s": 1,
                "devices": 3,
                "connects": 3,
                "back_after_s": 0.5,
                "not_back": 0,
            }
        ],
        [
            {
                "window": "w",
                "at_s": 1,
                "devices": 2,
                "connects": 9,
                "back_after_s": None,
                "not_back": 2,
            }
        ],
    )
    assert merged == [
        {
            "window": "w",
            "at_s": 1,
            "devices": 5,
            "connects": 12,
            "back_after_s": None,
            "not_back": 2,
        }
    ]


def test_the_report_section_round_trips_through_run_results() -> None:
    res = RunResults()
    res.mqtt = _stats(5, [0.01, 0.02, 0.03], 0.2)
    again = RunResults.from_dict(res.to_dict())
    assert again.mqtt is not None
    assert again.mqtt.to_dict() == res.mqtt.to_dict()
    merged = RunResults()
    merged.merge(again)
    merged.merge(RunResults.from_dict(res.to_dict()))
    assert merged.mqtt.counts["sessions_connected"] == 10
    assert merged.mqtt.heartbeat_latency.count == 6


def test_a_run_without_sessions_has_no_mqtt_section() -> None:
    assert "mqtt" not in RunResults().to_dict()
    assert RunResults.from_dict(RunResults().to_dict()).mqtt is None
