"""The benchmark command works end to end (smoke mode): every part ran and counted something.

Never a speed check: the figures of a one-second run on a shared machine mean
nothing. It checks the JSON's shape, that each part produced a nonzero count,
and that the harness's own checks held against the null server's answers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.run import PART_NAMES
from tests.support import ROOT, require_binary

NOT_CLIENTS = ("reference_server", "memory", "mqtt_sessions")  # parts with no claims figures
CLIENTS = tuple(name for name in PART_NAMES if name not in NOT_CLIENTS)
HARNESS = ("harness_keepalive", "harness_keepalive_workers", "harness_fresh", "loop_keepalive")


def test_smoke_run_produces_every_part(tmp_path: Path) -> None:
    require_binary("wrk")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "benchmarks.run", "--smoke", "--verify-every", "10"]
    cmd += ["--memory-devices", "5000", "--workers", "2", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())

    assert set(data) == {"machine", "settings", "parts", "ratios"}
    assert set(data["parts"]) == set(PART_NAMES)
    assert data["settings"]["smoke"] is True
    assert data["settings"]["pinned"] is (len(os.sched_getaffinity(0)) >= 2)
    for name, part in data["parts"].items():
        assert "error" not in part and "skipped" not in part, (name, part)
    for name in (*CLIENTS, "reference_server"):
        part = data["parts"][name]
        assert part["claims"] > 0, name
        assert part["rate"] > 0, name
    for name in (*HARNESS, "reference_server"):
        part = data["parts"][name]
        assert part["checks_passed"] is True, (name, part.get("violations"))
        assert part["ok"] == part["claims"], (name, part["by_status"])
        assert part["signatures_verified"] >= 1, name
        assert part["cpu_us_per_claim"] > 0, name
    assert data["parts"]["harness_keepalive_workers"]["workers"] == 2
    assert data["parts"]["locust"]["failures"] == 0
    assert data["parts"]["wrk"]["non_2xx"] == 0
    mem = data["parts"]["memory"]
    assert mem["devices"] == 5000
    assert mem["rss_scheduled_bytes"] >= mem["rss_idle_bytes"] > mem["rss_before_bytes"] > 0
    assert mem["bytes_per_device_idle"] > 0
    ratios = data["ratios"]
    for key in (
        "keepalive_vs_locust",
        "keepalive_vs_wrk",
        "fresh_vs_keepalive",
        "keepalive_workers_vs_wrk",
    ):
        assert isinstance(ratios[key], float) and ratios[key] > 0, key
    assert "keep-alive / Locust" in proc.stdout
    # The goal line shows what was compared with the goal: 29.6% is "NOT met", never "30%".
    line = re.search(r"keep-alive / wrk: +(\d+\.\d)% \(goal >= 30%: (met|NOT met)\)", proc.stdout)
    assert line is not None, proc.stdout
    assert float(line[1]) == round(ratios["keepalive_vs_wrk"] * 100, 1)
    assert (line[2] == "met") is (ratios["keepalive_vs_wrk"] >= 0.30)
    assert "SMOKE RUN" in proc.stdout
