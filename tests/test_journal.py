"""The claim journal (harness.journal): what a run writes, what a rebuild reads back, and
that nothing secret is ever in it. Real runs, real files; no stand-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.cli.report import merge_reports
from harness.errors import HarnessInputError
from harness.fleet.loader import load_fleet
from harness.journal import ClaimJournal, read_journal, report_from_journal, safe_url
from harness.report import build_report
from harness.results import RunResults
from harness.run import SoakJob, SoakOptions, SoakOutcome, run_job
from tests.support import ROOT
from tests.support.equality import histogram_facts

SOAK = ROOT / "fleets" / "soak.toml"
SMALL = load_fleet(SOAK).scaled(300)
# A nonce, HMAC or OOB secret: 16+ hex digits with a letter among them (not a long float).
LONG_HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b", re.IGNORECASE)
HEADER = {"kind": "start", "journal_version": 1, "run_id": "unit", "run": {"model": "closed"}}


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a journal, parsed (a cut-off last line is left out)."""
    out = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def claims_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("kind") == "claim"]


def test_lines_replayed_give_the_results_recording_gives(tmp_path: Path) -> None:
    """The journal's latencies are whole microseconds, so the rebuilt histograms are
    exactly those RunResults.record_claim makes from the same claims."""
    path = tmp_path / "j.jsonl"
    journal = ClaimJournal(path, HEADER)
    journal.on_start({})  # no running loop: flushed by size and at the end
    live = RunResults()
    for i in range(5000):
        status = ("200", "401", "409", "timeout")[i % 4]
        scenario = ("first_claim", "retry_after_loss")[i % 2]
        latency = 0.0003 + (i * 7919 % 100_000) / 1e5 * 2.5  # 0.3 ms .. 2.5 s, odd values
        sched = None if i % 3 == 0 else latency + (i % 7) / 1000
        live.record_claim(scenario, status, latency, sched)
        journal.on_claim(scenario, status, latency, sched)
        if i % 97 == 0:
            live.check("replay_conflict").record(False)
            journal.on_violation("replay_conflict")
    live.duration_s = 4.0
    journal.on_finish(live)

    run = read_journal(path)
    assert run.finish is not None and run.claim_lines == 5000 and run.unreadable == 0
    got = run.results
    assert (got.sent, dict(got.by_status), dict(got.by_scenario)) == (
        live.sent,
        dict(live.by_status),
        dict(live.by_scenario),
    )
    assert histogram_facts(got.latency) == histogram_facts(live.latency)
    assert histogram_facts(got.latency_scheduled) == histogram_facts(live.latency_scheduled)
    assert got.checks["replay_conflict"].violations == live.checks["replay_conflict"].violations
    report = report_from_journal(path)
    assert "partial" not in report
    assert report["latency_seconds"] == live.latency.summary()
    assert report["duration_s"] == 4.0  # from the finish line


def test_cut_off_and_unreadable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = ClaimJournal(path, HEADER)
    journal.on_start({})
    for _ in range(10):
        journal.on_claim("first_claim", "200", 0.01, 0.01)
    journal.flush()
    journal.close()  # killed: no finish line
    whole = path.read_bytes()
    path.write_bytes(whole + b"\x00\xffnot json\n" + whole.splitlines(keepends=True)[1][:-20])
    report = report_from_journal(path)
    assert report["partial"] is True and report["passed"] is False
    assert report["claims"]["sent"] == 10
    assert report["journal"]["truncated_last_line"] is True
    assert report["journal"]["unreadable_lines"] == 1
    note = report["verdict_note"]
    assert "did not finish" in note and "cut off" in note and "1 unreadable line" in note


def test_lines_that_do_not_add_up_to_the_finish_line_make_the_report_partial(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    journal = ClaimJournal(path, HEADER)
    journal.on_start({})
    results = RunResults()
    for _ in range(20):
        journal.on_claim("first_claim", "200", 0.01, 0.01)
        results.record_claim("first_claim", "200", 0.01, 0.01)
    journal.on_finish(results)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + lines[6:]))  # one claim line lost
    report = report_from_journal(path)
    assert report["partial"] is True and report["passed"] is False
    assert report["claims"]["sent"] == 19
    assert "do not add up to its finish line" in report["verdict_note"]


def test_a_partial_outcome_never_passes_and_stays_partial_when_merged(tmp_path: Path) -> None:
    results = RunResults()
    for _ in range(50):
        results.record_claim("first_claim", "200", 0.01)
        results.check("first_claim").record(True)
    outcome = SoakOutcome(results, {"run_id": "r", "fleet": "f"})
    whole = build_report(outcome)
    assert whole["passed"] is True and "partial" not in whole
    part = build_report(outcome, partial="the run did not finish")
    assert part["passed"] is False and part["partial"] is True
    assert part["checks_passed"] is True  # the checks held; the run as a whole was not seen
    assert "the run did not finish" in part["verdict_note"]
    paths = []
    for name, data in (("whole", whole), ("part", part)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    merged = merge_reports(paths)
    assert merged["partial"] is True and merged["passed"] is False
    assert "part.json" in merged["verdict_note"]
    assert merge_reports(paths[:1])["passed"] is True


def test_workers_append_to_one_journal_and_the_rebuild_equals_the_run(tmp_path: Path) -> None:
    """Two worker processes append whole lines to one O_APPEND file: one start line, every
    claim of both workers, the finish line last; the rebuild is the merged report."""
    path = tmp_path / "j.jsonl"
    live = run_job(
        SoakJob(SoakOptions(fleet=SMALL, claims=600, journal=str(path)), workers=2, quiet=True)
    ).report
    lines = journal_lines(path)
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "start" and kinds[-1] == "finish" and kinds.count("start") == 1
    assert kinds.count("finish") == 1
    assert len(path.read_bytes().splitlines()) == len(lines)  # no line broken or interleaved
    claims = claims_of(lines)
    assert len(claims) == live["claims"]["sent"] == 600
    assert {c["worker"] for c in claims} == {0, 1}
    rebuilt = report_from_journal(path)
    assert rebuilt["claims"] == live["claims"]  # by status, by scenario, late starts, rate
    assert rebuilt["latency_seconds"] == live["latency_seconds"]
    assert [(c["name"], c["violations"], c["evaluated"]) for c in rebuilt["checks"]] == [
        (c["name"], c["violations"], c["evaluated"]) for c in live["checks"]
    ]
    assert rebuilt["passed"] == live["passed"]


def _needles(fleet: Any) -> set[str]:
    """Each device's ID, child ID and OOB secret (hex), whole and in 16-character pieces."""
    out: set[str] = set()
    for dev in fleet.devices():
        for value in (dev.device_id, dev.child_id, bytes(dev.oob).hex()):
            text = str(value).strip().lower()
            out.add(text)
            out.update(text[i : i + 16] for i in range(0, len(text) - 15, 8))
    return {n for n in out if len(n) >= 8}


def test_nothing_secret_in_the_journal(tmp_path: Path) -> None:
    """A real soak's journal: no device or child ID, OOB secret, nonce, HMAC or token."""
    path = tmp_path / "j.jsonl"
    fleet = load_fleet(SOAK)
    opts = SoakOptions(claims=600, journal=str(path))
    report = run_job(SoakJob(opts, quiet=True)).report
    assert report["claims"]["sent"] == 600
    text = path.read_text(encoding="utf-8").lower()
    assert len(claims_of(journal_lines(path))) == 600
    found = sorted(n for n in _needles(fleet) if n in text)
    assert found == [], found[:5]
    # Nonces and HMACs (long hex) and JWTs, anywhere but the encoded histograms.
    for line in journal_lines(path):
        if line["kind"] == "finish":
            line["results"].pop("histograms")
        flat = json.dumps(line)
        assert not LONG_HEX.search(flat), flat[:200]
        assert "eyJ" not in flat


def test_a_violation_example_is_masked(tmp_path: Path) -> None:
    """When the judge hands an example over, what reaches the file is scrubbed."""
    path = tmp_path / "j.jsonl"
    journal = ClaimJournal(path, HEADER)
    journal.on_start({})
    secret_hmac = "a3" * 32
    journal.on_violation(
        "token_claims",
        {
            "device_id": "CCDBA7D7F1DC",
            "got": f"hmac {secret_hmac} token eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
        },
    )
    journal.on_finish(RunResults())
    text = path.read_text(encoding="utf-8")
    assert "CCDBA7D7F1DC" not in text and secret_hmac not in text and "eyJhbGciOi" not in text
    assert read_journal(path).results.checks["token_claims"].violations == 1


def test_urls_lose_their_user_info() -> None:
    assert safe_url("https://user:pw@staging.example:8443/base?key=1") == (
        "https://staging.example:8443/base"
    )
    assert safe_url("embedded") == "embedded"


def test_an_unwritable_journal_is_refused_before_the_run(tmp_path: Path) -> None:
    opts = SoakOptions(fleet=SMALL, claims=10, journal=str(tmp_path))  # a directory
    with pytest.raises(HarnessInputError, match="--journal"):
        run_job(SoakJob(opts, quiet=True))
    opts = SoakOptions(fleet=SMALL, claims=10, journal=str(tmp_path / "no" / "j.jsonl"))
    with pytest.raises(HarnessInputError, match="--journal"):
        run_job(SoakJob(opts, quiet=True))
