"""JUnit XML: one testcase per check and threshold, failures carry masked examples."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.errors import HarnessInputError
from harness.junit import write_junit
from harness.masking import mask_id
from harness.results import CHECK_NAMES, RunResults
from harness.thresholds import evaluate, parse_thresholds

SECRET = "1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090"


def _report() -> dict:
    res = RunResults(duration_s=3.0)
    for i in range(50):
        res.record_claim("first_claim", "200" if i % 10 else "409", 0.05)
    res.check("first_claim").record(True)
    res.check("idempotent_retry").record(
        False,
        {"device_id": mask_id("CCDBA795BAA4"), "expected": "200 same body", "got": "409"},
    )
    # A writer upstream forgot to mask: JUnit must still not carry the secret.
    res.check("replay_conflict").record(False, {"device_id": "CCDB***", "got": f"oob {SECRET}"})
    report = res.to_dict()
    report["run_id"] = "run-1"
    report["thresholds"] = evaluate(parse_thresholds(["p95<0.5", "error_rate>0.5"]), res)
    return report


def test_one_testcase_per_check_and_threshold(tmp_path: Path) -> None:
    out = write_junit(_report(), tmp_path / "junit.xml")
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    checks = suites["harness.checks"].findall("testcase")
    assert [c.get("name") for c in checks] == list(CHECK_NAMES)
    failed = {c.get("name") for c in checks if c.find("failure") is not None}
    assert failed == {"idempotent_retry", "replay_conflict"}
    assert suites["harness.checks"].get("failures") == "2"
    assert suites["harness.checks"].get("tests") == str(len(CHECK_NAMES))
    # Checks that never ran are skipped, not silently green.
    skipped = {c.get("name") for c in checks if c.find("skipped") is not None}
    assert "first_claim" not in skipped and "auto_register" in skipped
    ths = suites["harness.thresholds"].findall("testcase")
    assert [t.get("name") for t in ths] == ["p95<0.5", "error_rate>0.5"]
    assert ths[0].find("failure") is None and ths[1].find("failure") is not None
    assert root.get("failures") == "3"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["run_id"] == "run-1" and props["claims.sent"] == "50"


def test_failures_carry_examples_and_no_secret(tmp_path: Path) -> None:
    out = write_junit(_report(), tmp_path / "junit.xml")
    text = out.read_text()
    assert SECRET not in text and SECRET.lower() not in text
    assert "CCDBA795BAA4" not in text
    root = ET.parse(out).getroot()
    case = next(c for c in root.iter("testcase") if c.get("name") == "idempotent_retry")
    failure = case.find("failure")
    assert failure is not None
    assert "1 violation" in failure.get("message", "")
    assert "CCDB***" in (failure.text or "") and "409" in (failure.text or "")


def test_unwritable_path_is_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessInputError, match="--junit"):
        write_junit(_report(), tmp_path / "missing-dir" / "junit.xml")
