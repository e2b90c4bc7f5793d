"""``harness soak --journal`` then ``harness report from-journal`` as a user runs them: real
subprocesses on the embedded server, a finished run and one SIGKILLed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import HARNESS, ROOT, run_harness

WAIT_S = 120  # for the killed run's first claim lines (a busy machine starts slowly)


def journal_claims(path: Path) -> list[dict[str, Any]]:
    """The journal's whole claim lines, counted here independently of the harness."""
    out = []
    for raw in path.read_bytes().split(b"\n"):
        try:
            line = json.loads(raw)
        except ValueError:  # the cut-off last line of a killed run
            continue
        if line.get("kind") == "claim":
            out.append(line)
    return out


def test_the_rebuilt_report_counts_what_the_live_report_counted(tmp_path: Path) -> None:
    """Idempotency declared on v5.0: the known race gives concurrent_retry violations, so the
    comparison covers violations as well as every status and scenario count."""
    journal, live_path, rebuilt_path = (tmp_path / n for n in ("j.jsonl", "live.json", "re.json"))
    junit = tmp_path / "re.xml"
    soak = run_harness(
        "soak", "--claims", "1500", "--flag", "ENABLE_IDEMPOTENCY=true", "--no-progress",
        "--journal", str(journal), "--report", str(live_path),
    )  # fmt: skip
    assert soak.returncode == 1, soak.stderr  # the race: FAILED, as the live run says
    live = json.loads(live_path.read_text())
    rebuilt_run = run_harness(
        "report", "from-journal", str(journal), "--report", str(rebuilt_path),
        "--junit", str(junit),
    )  # fmt: skip
    assert rebuilt_run.returncode == 1, rebuilt_run.stderr
    rebuilt = json.loads(rebuilt_path.read_text())
    assert "partial" not in rebuilt and rebuilt["journal"]["finished"] is True
    assert rebuilt["claims"]["sent"] == live["claims"]["sent"] == 1500
    assert len(journal_claims(journal)) == 1500
    assert rebuilt["claims"]["by_status"] == live["claims"]["by_status"]
    assert rebuilt["claims"]["by_scenario"] == live["claims"]["by_scenario"]

    def violations(report: dict[str, Any]) -> dict[str, int]:
        return {c["name"]: c["violations"] for c in report["checks"]}

    assert violations(rebuilt) == violations(live)
    assert violations(live)["concurrent_retry"] > 0  # the comparison has something to compare
    assert rebuilt["latency_seconds"] == live["latency_seconds"]  # histograms rebuilt exactly
    assert rebuilt["latency_from_schedule_seconds"] == live["latency_from_schedule_seconds"]
    assert rebuilt["run_id"] == live["run_id"] and rebuilt["flags"] == live["flags"]
    assert "concurrent_retry" in junit.read_text() and "FAILED" in rebuilt_run.stdout


@pytest.fixture
def killed_soak(tmp_path: Path) -> Iterator[Path]:
    """A 30 s soak with --journal, SIGKILLed once its journal holds claim lines."""
    journal = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        [*HARNESS, "soak", "--duration", "30", "--no-progress", "--journal", str(journal)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its embedded server child in the same group, for cleanup
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not (journal.exists() and b'"kind":"claim"' in journal.read_bytes()):
            if proc.poll() is not None:
                pytest.fail(f"soak ended early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("no claim line in the journal")
            time.sleep(0.1)
        time.sleep(1.0)  # a few more flushes, so the kill lands mid-run
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        yield journal
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # the server child leaves with its
            os.killpg(proc.pid, signal.SIGKILL)  # parent; its group is ours: make sure of it
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_killed_run_is_rebuilt_as_partial_and_every_claim_line_counts(
    killed_soak: Path, tmp_path: Path
) -> None:
    lines = killed_soak.read_bytes().split(b"\n")
    assert b'"kind":"finish"' not in killed_soak.read_bytes()
    claims = journal_claims(killed_soak)
    assert claims
    out = tmp_path / "partial.json"
    rebuilt = run_harness("report", "from-journal", str(killed_soak), "--report", str(out))
    assert rebuilt.returncode == 1, rebuilt.stderr
    report = json.loads(out.read_text())
    assert report["partial"] is True and report["passed"] is False
    assert report["claims"]["sent"] == len(claims) > 0
    by_status: dict[str, int] = {}
    for claim in claims:
        by_status[claim["status"]] = by_status.get(claim["status"], 0) + 1
    assert report["claims"]["by_status"] == dict(sorted(by_status.items()))
    assert report["latency_seconds"]["count"] == len(claims)
    assert "did not finish" in report["verdict_note"] and "journal" in report["verdict_note"]
    assert "FAILED (partial run)" in rebuilt.stdout
    cut = lines[-1] != b""  # SIGKILL mid-write leaves a cut-off last line; it is counted
    assert report["journal"]["truncated_last_line"] is cut
    # The run's own thresholds and passes are not there to pass it: even gates it meets
    # leave a partial run failed.
    lenient = run_harness("report", "from-journal", str(killed_soak), "--threshold", "claims>0")
    assert lenient.returncode == 1, lenient.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8, "not a claim journal"),
        (b'{"claims": {"sent": 3}}\n', "not a claim journal"),
        (b'{"kind":"claim","worker":0,"t_ms":1,"scenario":"x","status":"200"}\n', "not a claim"),
        (b"", "empty file"),
        (None, "cannot read"),
    ],
    ids=["binary", "json-not-a-journal", "claims-without-start", "empty", "missing"],
)
def test_a_file_that_is_not_a_journal_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "never.json"
    res = run_harness("report", "from-journal", str(path), "--report", str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert says in res.stderr and str(path) in res.stderr
    assert not out.exists()
