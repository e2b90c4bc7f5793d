"""The HTML reports in a real browser: Debian's headless Chromium opens each file from
disk in a network namespace of its own (no network at all), and the figures in the
DOM it renders must be the JSON report's: claims sent, failed checks, violations,
cohort counts, every claim in the outcomes chart, the compat grid cell by cell. A
screenshot of each page is kept under the test's tmp path (the CI artifact)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.html.browser import dump_dom, screenshot
from tests.html.dom import Figures
from tests.support import ROOT, require_binary, run_harness

# A network namespace needs root (CI runs as root); without it the page is opened with the
# network on, and the Content-Security-Policy and the URL grep still keep it offline.
OFFLINE = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _chromium() -> None:
    """Before the run a test makes, not after it: no Chromium, no minute spent for nothing."""
    require_binary("chromium", "chromium")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_harness(*args, timeout=300, cwd=cwd)


def _page(tmp_path: Path, html: Path) -> Figures:
    dom = dump_dom(html, offline=OFFLINE)
    (tmp_path / f"{html.stem}.dom.html").write_text(dom, encoding="utf-8")
    png = screenshot(html, tmp_path / f"{html.stem}.png", offline=OFFLINE, size=(1100, 2600))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    return Figures(dom)


def _no_fetch(html: Path) -> None:
    """Nothing in the file points off it (the SVG namespace is a name, not a fetch)."""
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text)) - {"http://www.w3.org/2000/svg"}
    assert not urls, urls
    assert "default-src 'none'" in text


def test_a_soak_report_renders_offline_with_the_json_reports_figures(tmp_path: Path) -> None:
    # A run that fails a check (v5's idempotency race) and has a fault window and outage.
    done = _run(
        "soak",
        "--claims",
        "2400",
        "--rate",
        "400",
        "--flag",
        "ENABLE_IDEMPOTENCY=true",
        "--fault",
        "server:restart@2s+1s",
        "--threshold",
        "p99<5",
        "--report",
        "r.json",
        "--html",
        "r.html",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 100  # the console summary
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    html = tmp_path / "r.html"
    _no_fetch(html)
    page = _page(tmp_path, html)

    assert page.text("data-figure", "verdict") == "FAILED"
    sent = report["claims"]["sent"]
    assert sent >= 2400  # the plan, and the resends of claims the restart cut
    assert page.number("data-figure", "claims-sent") == sent
    failed = [c for c in report["checks"] if not c["passed"]]
    assert failed and page.number("data-figure", "checks-failed") == len(failed)
    shown = page.values("data-violations")
    assert {k: int(v.replace(",", "")) for k, v in shown.items()} == {
        c["name"]: c["violations"] for c in report["checks"]
    }
    cohorts = {k: int(v.replace(",", "")) for k, v in page.values("data-cohort").items()}
    assert cohorts == {c: sum(v.values()) for c, v in report["by_cohort"].items()}
    statuses = {k: int(v.replace(",", "")) for k, v in page.values("data-status").items()}
    assert statuses == report["claims"]["by_status"]
    # Every claim is in the outcomes chart, every violation in the violations chart.
    assert sum(int(n) for n in page.in_chart("outcomes", "data-n")) == sent
    assert sum(int(n) for n in page.in_chart("violations", "data-n")) == sum(
        c["violations"] for c in report["checks"]
    )
    layers = set(page.in_chart("outcomes", "data-layer"))
    assert layers == set(report["claims"]["by_status"])
    # The fault window and the outage it caused are drawn on the time axes.
    kinds = page.in_chart("outcomes", "data-kind")
    assert "fault" in kinds and "outage" in kinds
    assert page.in_chart("latency-send", "data-layer") == ["p50", "p95", "p99"]
    assert page.in_chart("latency-schedule", "data-layer") == ["p50", "p95", "p99"]


def test_the_compat_matrix_renders_offline_cell_by_cell(tmp_path: Path) -> None:
    done = _run(
        "compat",
        "--fleet",
        str(ROOT / "fleets" / "teddy-v5.toml"),
        "--claims-per-cohort",
        "10",
        "--report",
        "c.json",
        "--html",
        "c.html",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # v5.0 legacy devices break: NO-GO
    report = json.loads((tmp_path / "c.json").read_text())
    html = tmp_path / "c.html"
    _no_fetch(html)
    page = _page(tmp_path, html)
    assert page.text("data-figure", "verdict") == "NO-GO"
    cohorts = {k: int(v.replace(",", "")) for k, v in page.values("data-cohort").items()}
    assert cohorts == {c["name"]: c["devices"] for c in report["cohorts"]}
    assert page.number("data-figure", "devices") == report["devices"]
    cells = {
        e.attrs["data-cell"]: float(e.attrs["data-rejected"])
        for e in page.found
        if "data-cell" in e.attrs
    }
    want = {
        f"{c['name']}|{k}": cell["rejected_share"]
        for c in report["cohorts"]
        for k, cell in c["by_configuration"].items()
    }
    assert cells == pytest.approx(want)
    fleet = {k: v for k, v in page.values("data-fleet-rejected").items()}
    assert fleet == {k: f"{v:.1%}" for k, v in report["fleet_rejected_share"].items()}


def test_a_bench_report_renders_one_row_per_board(tmp_path: Path) -> None:
    from tests.hil.conftest import write_bench

    # A v5.0 board and a v5.1 one under NORMALIZE: the legacy-signed board gets 401s.
    bench = write_bench(
        tmp_path / "bench.toml", ["5.0.3", "5.1.0"], flags={"NORMALIZE_IDS_IN_HMAC": True}
    )
    done = _run(
        "hil", "run", "--bench", str(bench), "--report", "b.json", "--html", "b.html", cwd=tmp_path
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    page = _page(tmp_path, tmp_path / "b.html")
    boards = page.values("data-board")
    assert sorted(boards) == sorted(b["name"] for b in report["boards"]) == ["v0", "v1"]
    assert page.number("data-figure", "claims-sent") == report["claims"]["sent"] > 0
    assert page.text("data-figure", "verdict") == ("PASSED" if report["passed"] else "FAILED")
    # The legacy board's 401s, as the report has them, are in its row.
    by_board = {b["name"]: b["claims_by_status"] for b in report["boards"]}
    assert by_board["v0"].get("401") and not by_board["v1"].get("401"), by_board
    dom = (tmp_path / "b.dom.html").read_text(encoding="utf-8")
    assert f"401x{by_board['v0']['401']}" in dom
