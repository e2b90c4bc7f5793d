"""The MQTT session benchmark works end to end (smoke mode): both parts held sessions.

Never a speed check: a second of 200 sessions on a shared machine says nothing
about rates, so only the JSON's shape and nonzero counts are asserted; the
speed goals live in ``benchmarks/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, require_binary


def test_smoke_run_measures_both_parts(tmp_path: Path) -> None:
    require_binary("mosquitto", "mosquitto")
    out = tmp_path / "mqtt.json"
    cmd = [sys.executable, "-m", "benchmarks.mqtt_sessions", "--smoke", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())

    assert set(data) == {"machine", "settings", "parts", "goals"}
    assert data["settings"]["smoke"] is True
    assert {"harness", "baseline"} <= set(data["parts"])
    for name, part in data["parts"].items():
        assert "error" not in part, (name, part)
        assert part["sessions"] > 0, name
        assert part["connects_per_s"] > 0, name
        assert part["heartbeats_acked"] > 0, name
        assert part["rss_steady_bytes"] > 0 and part["kib_per_session"] is not None, name
    harness = data["parts"]["harness"]
    assert harness["sessions"] == data["settings"]["sessions"]
    assert harness["refusals"] == 0 and harness["losses"] == 0
    assert harness["stopped_cleanly"] is True
    goals = data["goals"]
    assert isinstance(goals["meets_memory_goal"], bool)
    assert isinstance(goals["meets_connect_goal"], bool)
    assert goals["connect_ratio"] > 0
    assert "connects/s, harness / baseline" in proc.stdout
    assert "SMOKE RUN" in proc.stdout
