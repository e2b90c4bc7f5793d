"""The report's verdict: a run that judged nothing never passes, alone or merged."""

from __future__ import annotations

from pathlib import Path

from harness.cli.report import merge_reports
from harness.report import build_report, write_report
from harness.results import RunResults
from harness.run import SoakOutcome


def _only(status: str, n: int = 30) -> SoakOutcome:
    results = RunResults()
    for _ in range(n):
        results.record_claim("first_claim", status, 0.01)
    return SoakOutcome(results, {"run_id": "r1", "fleet": "f"})


def test_a_run_the_server_only_told_to_back_off_judged_nothing(tmp_path: Path) -> None:
    report = build_report(_only("429"))
    assert report["checks_passed"] is False and report["passed"] is False
    assert "every answer was 429" in report["verdict_note"]
    write_report(report, tmp_path / "a.json")
    merged = merge_reports([tmp_path / "a.json"])
    assert merged["passed"] is False and "every answer was 429" in merged["verdict_note"]


def test_one_judged_answer_is_enough_to_be_judged() -> None:
    outcome = _only("429")
    outcome.results.record_claim("first_claim", "200", 0.01)
    outcome.results.checks["first_claim"].record(True)
    report = build_report(outcome)
    assert report["passed"] is True and "verdict_note" not in report


def test_the_summary_fits_100_columns_and_keeps_every_word() -> None:
    from harness.report import summary_table

    res = RunResults()
    res.record_claim("first_claim", "401", 0.01)
    long_got = "got " + " ".join(f"word{i}" for i in range(60))
    res.check("replay_protection_during_outage").record(
        False,
        {
            "device_id": "CCDB***",
            "cohort": "c" * 30,
            "scenario": "s",
            "expected": "200",
            "got": long_got,
        },
    )
    outcome = SoakOutcome(res, {"run_id": "r", "fleet": "f" * 60, "target": "t" * 40})
    table = summary_table(build_report(outcome))
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert " ".join(f"word{i}" for i in range(60)) in " ".join(table.split())
    # The check column is as wide as the longest check name: the columns still line up.
    rows = [line for line in lines if line.startswith(("first_claim ", "replay_protection_d"))]
    assert len({line.index("pass" if " pass " in line else "FAIL") for line in rows}) == 1


def test_sessions_asked_for_and_none_online_is_not_a_pass() -> None:
    from harness.mqtt.stats import MqttStats

    outcome = _only("200")
    outcome.results.checks["first_claim"].record(True)
    outcome.results.mqtt = MqttStats()
    report = build_report(outcome)
    assert report["passed"] is False and "no device went online" in report["verdict_note"]
    outcome.results.judged("mqtt_connect", True)
    assert build_report(outcome)["passed"] is True
