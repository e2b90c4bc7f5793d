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
