"""The observer's bookkeeping: heartbeats as a watermark, and what a dying broker hides."""

from __future__ import annotations

from harness.mqtt.observer import MqttObserver, _Device
from harness.mqtt.stats import MqttStats
from harness.mqtt.topics import Topics
from harness.results import RunResults


def test_heartbeats_are_a_watermark_with_duplicates_gaps_and_skips() -> None:
    dev = _Device(acked=6)
    assert [dev.saw(s) for s in (0, 1, 1, 3, 5, 0)] == [True, True, False, True, True, False]
    assert dev.low == 2 and dev.above == {3, 5} and dev.seen == 4
    assert dev.missing() == [2, 4]
    dev.blind.add(4)  # acknowledged while nothing could see it: not missing
    assert dev.missing() == [2]
    dev.saw(9)  # past anything acknowledged: 6..8 were jumped over
    assert dev.skipped() == [6, 7, 8]


def _observer() -> MqttObserver:
    obs = MqttObserver("127.0.0.1", 1, Topics(), MqttStats(), None, None)
    obs.blind_until = 0.0  # subscribed
    obs.watch("d1", "mac")
    return obs


def test_what_the_broker_had_not_delivered_when_it_died_is_not_judged() -> None:
    obs = _observer()
    for seq in range(3):
        obs.heartbeat_acked("d1", seq)
    obs.devices["d1"].saw(0)
    obs.birth_acked("d1", "s1")  # never seen
    obs.session_killed("d1", "s0")  # its will never seen
    obs.broker_lost()
    results = RunResults()
    obs.verdicts(results)
    assert obs.stats.counts["unobserved"] == 4  # seq 1, 2, the birth, the will
    assert results.checks["mqtt_heartbeat_gaps"].violations == 0
    assert results.checks["mqtt_birth"].evaluated == 0
    assert results.checks["mqtt_last_will"].evaluated == 0


def test_without_a_broker_loss_the_same_losses_are_violations_with_masked_examples() -> None:
    obs = _observer()
    for seq in range(3):
        obs.heartbeat_acked("d1", seq)
    obs.devices["d1"].saw(0)
    obs.birth_acked("d1", "s1")
    obs.session_killed("d1", "s0")
    results = RunResults()
    obs.verdicts(results)
    gaps = results.checks["mqtt_heartbeat_gaps"]
    assert gaps.violations == 1 and gaps.examples[0]["got"] == "2 missing, first seq 1"
    assert results.checks["mqtt_birth"].violations == 1
    assert results.checks["mqtt_last_will"].violations == 1
    assert all(
        ex["device_id"] == "d1***" or "***" in ex["device_id"]
        for c in results.checks.values()
        for ex in c.examples
    )


def test_a_ping_unanswered_when_the_broker_went_is_not_a_violation_but_otherwise_is() -> None:
    import time

    for lose in (True, False):
        obs = _observer()
        obs.devices["d1"].pinged["p1"] = ("s1", time.monotonic() - 10.0)  # long unanswered
        assert obs.pings_pending()
        if lose:
            obs.broker_lost()
            assert not obs.pings_pending()
        results = RunResults()
        obs.verdicts(results)
        assert results.checks["mqtt_ping"].violations == (0 if lose else 1)
