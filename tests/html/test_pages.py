"""The report pages: masked and escaped like every output, and whole for every report kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.html import render, write_html
from harness.report import build_report
from harness.results import RunResults
from harness.run import SoakOutcome
from tests.support import run_harness

DEVICE = "Teddy-ESP32-A1B2C3D4E5F6"
HMAC = "9f" * 32


def _report() -> dict[str, Any]:
    res = RunResults()
    res.record_claim("first_claim", "200", 0.01)
    res.record_claim("first_claim", "401", 0.02)
    tally = res.check("first_claim")
    tally.record(True)
    tally.record(  # unmasked on purpose: the page masks whatever reaches it
        False,
        {
            "device_id": DEVICE,
            "cohort": "c",
            "scenario": "first_claim",
            "expected": "200",
            "got": f"401 <script>alert(1)</script> hmac {HMAC}",
        },
    )
    res.by_cohort[("c", "200")] += 1
    return build_report(SoakOutcome(res, {"run_id": "r1", "fleet": "soak"}))


def test_a_page_masks_secrets_and_ids_and_escapes_markup() -> None:
    page = render(_report())
    assert DEVICE not in page and DEVICE.lower() not in page.lower()
    assert HMAC not in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert 'data-figure="verdict">FAILED<' in page
    assert "No interval series" in page  # a report without one says so, instead of empty axes


def test_merge_writes_the_html_of_the_merged_run(tmp_path: Path) -> None:
    report = _report()
    for i in range(2):
        part = dict(report, shard=f"{i}/2")
        (tmp_path / f"r{i}.json").write_text(json.dumps(part))
    done = run_harness("report", "merge", "r0.json", "r1.json", "--html", "m.html", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    page = (tmp_path / "m.html").read_text()
    assert 'data-figure="claims-sent">4<' in page and "shards" in page and "0/2, 1/2" in page


def test_an_unwritable_html_path_is_one_line_and_exit_2_before_the_run(tmp_path: Path) -> None:
    done = run_harness("soak", "--claims", "10", "--html", str(tmp_path / "no" / "x.html"))
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"harness: error: --html: cannot write {tmp_path}/no/x.html: "
        f"{tmp_path}/no is not a directory"
    ]
    assert "Traceback" not in done.stderr


def test_write_html_writes_a_whole_page_over_an_old_one_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    target.write_text("old")
    write_html(_report(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.tmp"))


def test_fault_windows_outages_and_broker_losses_share_the_time_axis() -> None:
    from harness.series import IntervalSeries

    res = RunResults()
    series = IntervalSeries()
    series.offset = 0.0
    for t in range(100, 110):  # ten 1 s intervals of the wall clock, from unix time 100
        res.record_claim("first_claim", "200", 0.01)
        series.add(t + 0.5, "200", 0.01, 0.01)
    res.series = series
    info = {
        "run_id": "r",
        "fleet": "f",
        "started_unix": 100.9,  # the run began 0.9 s into its first interval
        "fault_windows": [{"text": "redis:down@2s+1s", "began_after_s": 2.0, "lasted_s": 1.0}],
        "mqtt": {"windows": [{"text": "mqtt:restart@5s+2s", "at_s": 5.0, "for_s": 2.0}]},
    }
    report = build_report(SoakOutcome(res, info))
    # An outage placed by the wall clock (a merged one's offset counts from another start).
    report["outages"] = [{"started_at": 102.9, "started_after_s": 7.0, "duration_s": 1.5}]
    page = render(report)
    for kind in ("fault", "mqtt", "outage"):
        assert page.count(f'data-kind="{kind}"') == 3  # outcomes, latency from send, schedule
    # The bands sit where their seconds are: the axis runs from the first interval's
    # start (-0.9 s) to the last one's end (+9.1 s); the fault began 2 s after the start,
    # as did the outage, and the first interval's bar starts at the axis' left edge.
    from harness.html.svg import LEFT, PLOT_W

    x = LEFT + PLOT_W * (2.0 + 0.9) / 10.0
    assert f'<g class="band" data-kind="fault"><rect x="{x:.1f}"' in page
    assert f'<g class="band" data-kind="outage"><rect x="{x:.1f}"' in page
    assert f'data-t="-0.9" data-n="1" x="{LEFT:.1f}"' in page


def test_a_bench_that_failed_on_a_board_says_so_and_an_empty_run_says_nothing_was_sent() -> None:
    report = _report()
    report.update(
        boards=[{"name": "v0", "ok": False, "error": "no answer"}],
        boards_passed=False,
        passed=False,
    )
    for check in report["checks"]:
        check["passed"], check["violations"] = True, 0
    page = render(report)
    assert "boards failed: v0" in page and "checks failed:" not in page
    empty = build_report(SoakOutcome(RunResults(), {"run_id": "r"}))
    assert "no claim was sent" in render(empty)


def test_compat_no_verdict_is_not_shown_as_no_go() -> None:
    page = render(
        {
            "configurations": [],
            "normalize_go": False,
            "decision": "NO VERDICT",
            "verdict": "NO VERDICT: x",
        }
    )
    assert '<div class="verdict failed" data-figure="verdict">NO VERDICT<' in page
