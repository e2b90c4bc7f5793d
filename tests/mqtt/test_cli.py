"""``harness soak`` with MQTT sessions: report section, metrics, exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import require_binary, run_harness

FLEET = """
[fleet]
name = "cli-online"
seed = 99
[children]
count = 3
[session]
mqtt = true
time_scale = 0.05
kill_share = 0.2
[[cohorts]]
name = "mac"
count = 40
"""


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_harness(*args, timeout=240)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    require_binary("mosquitto", "mosquitto")
    path = tmp_path / "online.toml"
    path.write_text(FLEET)
    return path


def test_a_soak_with_sessions_reports_them_and_exports_them_to_prometheus(
    fleet: Path, tmp_path: Path
) -> None:
    promtool = require_binary("promtool", "prometheus")
    report, prom = tmp_path / "r.json", tmp_path / "prom"
    prom.mkdir()
    done = harness(
        "soak",
        "--fleet",
        str(fleet),
        "--claims",
        "80",
        "--mqtt-hold",
        "2s",
        "--report",
        str(report),
        "--textfile",
        str(prom),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mqtt (embedded): " in done.stdout and "PASSED" in done.stdout
    data = json.loads(report.read_text())
    m = data["mqtt"]
    assert m["sessions_connected"] > 20 and m["births"] >= m["sessions_connected"]
    assert m["heartbeats_seen"] >= m["heartbeats_sent"] > 0
    assert data["run"]["mqtt"]["broker"] == "embedded"
    names = {c["name"] for c in data["checks"]}
    assert {"mqtt_birth", "mqtt_heartbeat_gaps", "mqtt_ping", "mqtt_isolation"} <= names
    [textfile] = list(prom.glob("*.prom"))
    text = textfile.read_text()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("harness_mqtt_connects_total", (("reason", "Success"),))] == m["sessions"]
    acked = ("harness_mqtt_publishes_acked_total", (("kind", "heartbeat"),))
    assert samples[acked] == m["heartbeats_sent"]
    count = ("harness_mqtt_heartbeat_latency_seconds_count", ())
    assert samples[count] == m["heartbeats_seen"]
    # No device ID in any label: none of the fleet's IDs, whole or normalised.
    from harness.fleet import load_fleet

    devices = load_fleet(fleet)
    ids = {devices.device(i).device_id.strip().lower() for i in range(len(devices))}
    assert len(ids) == 40
    values = {value.lower() for (_name, labels), _v in samples.items() for _k, value in labels}
    assert not {v for v in values for i in ids if i in v}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mqtt", "http://broker:1883"], "--mqtt"),
        (["--mqtt", "embedded", "--mqtt-prefix", "teddy/#"], "--mqtt-prefix"),
        (["--mqtt-hold", "soon"], "--mqtt-hold"),
        (["--fault", "mqtt:cut:200@1s+1s"], "--fault"),
        (["--fault", "mqtt:down@1s+1s", "--mqtt", "mqtt://127.0.0.1:9"], "--fault"),
        (["--access-ttl", "5"], "--access-ttl"),
    ],
)
def test_bad_mqtt_input_is_one_line_and_exit_2(
    fleet: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    done = harness("soak", "--fleet", str(fleet), "--claims", "5", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and needle in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_an_external_broker_that_is_not_there_is_one_line_and_exit_2(
    fleet: Path, tmp_path: Path
) -> None:
    done = harness(
        "soak", "--fleet", str(fleet), "--claims", "5", "--mqtt", "mqtt://127.0.0.1:9", cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "--mqtt" in errors[0] and "127.0.0.1:9" in errors[0]


def test_workers_each_run_their_sessions_and_the_report_merges_them(
    fleet: Path, tmp_path: Path
) -> None:
    report, prom = tmp_path / "r.json", tmp_path / "prom"
    prom.mkdir()
    done = harness(
        "soak",
        "--fleet",
        str(fleet),
        "--claims",
        "120",
        "--workers",
        "2",
        "--mqtt-hold",
        "2s",
        "--report",
        str(report),
        "--textfile",
        str(prom),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    m = data["mqtt"]
    by_check = {c["name"]: c for c in data["checks"]}
    # Each worker's devices are its own slice: together they are the fleet's 40.
    assert 30 < m["sessions_connected"] <= 40
    assert by_check["mqtt_birth"]["evaluated"] == m["births"] and m["birth_duplicates"] == 0
    assert by_check["mqtt_heartbeat_gaps"]["violations"] == 0
    assert m["heartbeat_latency_seconds"]["count"] == m["heartbeats_seen"]
    [textfile] = list(prom.glob("*.prom"))
    text = textfile.read_text()
    assert f'harness_mqtt_connects_total{{reason="Success"}} {float(m["sessions"])}' in text
