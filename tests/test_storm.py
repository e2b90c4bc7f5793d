"""The outage tracker: what counts as an outage, each device's way back, and merging."""

from __future__ import annotations

from harness.storm import MIN_OUTAGE_S, StormTracker, merge_outages


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_an_outage_opens_at_a_failure_and_is_over_at_the_next_good_answer() -> None:
    storm = StormTracker(Clock())
    storm.failed(1, 10.0)
    storm.failed(2, 10.2)
    storm.retried(1, fresh=False)
    storm.retried(2, fresh=True)
    storm.answered(3, 13.0)  # the server is back (device 3 was never hit)
    assert storm.watching  # devices 1 and 2 are not back yet
    storm.answered(1, 13.5)
    storm.gave_up(2)
    assert not storm.watching
    [o] = storm.report(start=9.0, ended=20.0)
    assert (o["started_after_s"], o["duration_s"]) == (1.0, 3.0)
    assert (o["claims_failed"], o["devices_hit"], o["resends"], o["fresh_attempts"]) == (2, 2, 1, 1)
    assert o["devices_gave_up"] == 1 and o["devices_not_back"] == 0
    assert o["recovery_s"] == 0.5 and o["still_down"] is False


def test_failures_between_good_answers_are_blips_not_outages() -> None:
    storm = StormTracker(Clock())
    for i in range(20):  # a share of cut answers: a failure, then a good answer at once
        storm.failed(i, 10.0 + i)
        storm.answered(i + 100, 10.0 + i + MIN_OUTAGE_S / 10)
    assert storm.report(start=0.0, ended=40.0) == []


def test_an_outage_still_on_at_the_end_never_came_back() -> None:
    storm = StormTracker(Clock())
    storm.failed(1, 10.0)
    [o] = storm.report(start=0.0, ended=15.0)
    assert o["still_down"] and o["duration_s"] == 5.0 and o["recovery_s"] is None
    assert o["devices_not_back"] == 1


def test_a_device_not_back_by_the_end_leaves_recovery_unknown() -> None:
    storm = StormTracker(Clock())
    storm.failed(1, 10.0)
    storm.failed(2, 10.0)
    storm.answered(1, 12.0)
    [o] = storm.report(start=0.0, ended=15.0)
    assert o["devices_not_back"] == 1 and o["recovery_s"] is None


def test_overlapping_outages_of_two_workers_merge_into_one() -> None:
    a = {"started_at": 10.0, "back_at": 14.0, "started_after_s": 1.0, "duration_s": 4.0,
         "still_down": False, "claims_failed": 5, "devices_hit": 2, "resends": 3,
         "fresh_attempts": 1, "devices_gave_up": 0, "devices_not_back": 0, "recovery_s": 1.0,
         "fully_back_at": 15.0}  # fmt: skip
    b = {**a, "started_at": 10.5, "back_at": 14.5, "fully_back_at": 16.5, "claims_failed": 7}
    c = {**a, "started_at": 30.0, "back_at": 31.0, "fully_back_at": 31.0, "recovery_s": 0.0}
    merged = merge_outages([a, c], [b])
    assert len(merged) == 2
    first = merged[0]
    assert first["claims_failed"] == 12 and first["devices_hit"] == 4
    assert (first["started_at"], first["back_at"]) == (10.0, 14.5)
    assert first["recovery_s"] == 2.0  # the last device back at 16.5, the server at 14.5
