"""`hil run --pushgateway` pushes its run's metrics; a bad Pushgateway URL is refused before
any run (soak or HIL) starts."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, run_harness


def test_hil_run_pushes_its_metrics_under_its_run_id(pushgateway: str, tmp_path: Path) -> None:
    report_path = tmp_path / "hil.json"
    bench = str(ROOT / "hil" / "bench.example.toml")
    proc = run_harness(
        "hil", "run", "--bench", bench, "--report", str(report_path), "--pushgateway", pushgateway
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    claims = [
        s
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "harness_claims_total" and s.labels.get("run_id") == report["run_id"]
    ]
    assert claims, text[:2000]
    assert sum(s.value for s in claims) == report["claims"]["sent"] > 0


def test_bad_pushgateway_url_is_exit_2_before_anyrun_harness(tmp_path: Path) -> None:
    bench = str(ROOT / "hil" / "bench.example.toml")
    for args in (
        ("soak", "--claims", "50", "--report", str(tmp_path / "soak.json")),
        ("hil", "run", "--bench", bench, "--report", str(tmp_path / "hil.json")),
    ):
        proc = run_harness(*args, "--pushgateway", "ftp://example")
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "--pushgateway" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # neither run started, so no report was written


def test_a_pushgateway_that_died_during_the_run_costs_neither_report_nor_summary(
    tmp_path: Path,
) -> None:
    """The files and the summary are written first; the failed push is raised after them."""
    import io

    import pytest

    from harness.errors import HarnessInputError
    from harness.exporters import Exporters
    from harness.report import build_report
    from harness.run import SoakOptions, run_soak_sync
    from tests.support import free_port

    console = io.StringIO()
    dead = f"http://127.0.0.1:{free_port()}"
    exporters = Exporters(report=str(tmp_path / "r.json"), pushgateway=dead, console=console)
    observers = exporters.start("r1", "small")  # the gateway is not checked here: it "died"
    outcome = run_soak_sync(SoakOptions(claims=30, observers=observers))
    with pytest.raises(HarnessInputError, match=r"push to .* failed"):
        exporters.write(build_report(outcome))
    assert json.loads((tmp_path / "r.json").read_text())["claims"]["sent"] == 30
    assert console.getvalue().rstrip().endswith("PASSED")
