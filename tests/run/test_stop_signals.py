"""SIGINT/SIGTERM stop a soak gracefully: it stops sending, waits (bounded) for the claims
in flight, and writes its report, JUnit and summary marked partial; never a pass."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import HARNESS, ROOT


def _claim_lines(journal: Path) -> int:
    if not journal.exists():
        return 0
    return sum(1 for line in journal.read_text().splitlines() if '"kind":"claim"' in line)


@pytest.mark.parametrize(
    ("sig", "workers"), [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGINT, "2")]
)
def test_a_stopped_soak_writes_a_partial_report(
    tmp_path: Path, sig: signal.Signals, workers: str
) -> None:
    report, junit, journal = tmp_path / "r.json", tmp_path / "j.xml", tmp_path / "claims.jsonl"
    args = ["--duration", "60", "--concurrency", "8", "--no-progress", "--report", str(report),
            "--junit", str(junit), "--journal", str(journal)]  # fmt: skip
    if workers != "1":  # --workers with the embedded server: its own server process
        args += ["--workers", workers]
    soak = subprocess.Popen(
        [*HARNESS, "soak", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while _claim_lines(journal) < 200:  # well into the run
            assert soak.poll() is None and time.monotonic() < end, soak.communicate()
            time.sleep(0.2)
        stopped = time.monotonic()
        soak.send_signal(sig)
        out, err = soak.communicate(timeout=60)
    finally:
        if soak.poll() is None:
            soak.kill()
    assert time.monotonic() - stopped < 30  # long before the planned 60 s
    assert soak.returncode == 1, out + err
    assert "Traceback" not in err, err
    data = json.loads(report.read_text())
    assert data["partial"] is True and data["passed"] is False
    assert f"stopped by {sig.name}" in data["verdict_note"]
    assert "FAILED (partial run)" in out
    assert "<testsuite" in junit.read_text()
    # Every claim sent was accounted for: the report holds what the journal holds.
    assert data["claims"]["sent"] == _claim_lines(journal) > 0


def test_the_open_model_stops_at_once_even_at_a_low_rate(tmp_path: Path) -> None:
    """At 0.5 claims/s the next arrival is 2 s away: a stop does not wait for it, and
    nothing is sent after it."""
    report, journal = tmp_path / "r.json", tmp_path / "claims.jsonl"
    soak = subprocess.Popen(
        [*HARNESS, "soak", "--rate", "0.5", "--duration", "120", "--no-progress",
         "--report", str(report), "--journal", str(journal)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while _claim_lines(journal) < 1:
            assert soak.poll() is None and time.monotonic() < end, soak.communicate()
            time.sleep(0.1)
        sent_before = _claim_lines(journal)
        stopped = time.monotonic()
        soak.send_signal(signal.SIGINT)
        out, err = soak.communicate(timeout=60)
    finally:
        if soak.poll() is None:
            soak.kill()
    assert time.monotonic() - stopped < 10 and soak.returncode == 1, out + err
    data = json.loads(report.read_text())
    assert data["partial"] is True and data["claims"]["sent"] <= sent_before + 1
