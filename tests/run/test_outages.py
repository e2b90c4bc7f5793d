"""A server outage mid-soak: devices back off as their firmware does, and the report
measures the reconnect storm (harness.storm).

The server is a real ``harness serve`` process, killed and started again on the
same port while the soak runs, as an operator's restart would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from harness.fleet import parse_fleet
from harness.run import SoakOptions, SoakOutcome, run_soak_sync
from tests.support import HARNESS, ROOT, free_port
from tests.support.serve import fleet_seed, serve, wait_for_claims

SOAK = ROOT / "fleets" / "soak.toml"


def _soak(url: str, report: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*HARNESS, "soak", "--target", url, "--no-progress", "--report", str(report), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_3_s_outage_costs_a_few_resends_per_device_in_flight(tmp_path: Path) -> None:
    seed, port = fleet_seed(tmp_path, SOAK), free_port()
    url, report = f"http://127.0.0.1:{port}", tmp_path / "report.json"
    server = serve(seed, port)
    soak = None
    try:
        soak = _soak(url, report, "--duration", "15", "--concurrency", "32", "--timeout", "2")
        wait_for_claims(port)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        time.sleep(3.0)
        server = serve(seed, port)  # the same port: an operator's restart
        out, err = soak.communicate(timeout=120)
    finally:
        server.kill()
        server.wait(10)
        if soak is not None and soak.poll() is None:
            soak.kill()
    data = json.loads(report.read_text())
    silent = sum(data["claims"]["by_status"].get(k, 0) for k in ("connection_error", "timeout"))
    # One failed send per lane when the server died, then a resend every 2 s +-jitter while
    # it was gone (and a restart takes a moment more): a few per device, never thousands.
    assert 32 <= silent <= 32 * 6, data["claims"]["by_status"]
    [outage] = data["outages"]
    assert 3.0 <= outage["duration_s"] < 30, outage
    # Each lane's device, and a few more: an episode whose probe send (another HMAC) got no
    # answer ends without retries, and its lane's next device meets the outage too.
    assert 32 <= outage["devices_hit"] <= 64 and outage["claims_failed"] == silent, outage
    assert 0 < outage["resends"] <= 32 * 5 and outage["devices_gave_up"] == 0, outage
    # Every device hit was back: the last one at most a resend delay (2 s +25%) and a
    # claim after the server answered again.
    assert outage["devices_not_back"] == 0 and 0 <= outage["recovery_s"] < 10, outage
    assert data["extra"]["firmware_resends"] == outage["resends"]
    assert "OUTAGE at +" in out and "claiming again" in out, out
    # Nothing was declared down: every claim that got no answer is a violation.
    assert soak.returncode == 1 and "UNANSWERED" in out, out + err


def _dead_target_run(habits: str | None, **options: object) -> SoakOutcome:
    """A soak against a port nothing listens on: every claim is refused at once."""
    line = f'habits = "{habits}"\n' if habits else ""
    fleet = parse_fleet(
        f'[fleet]\nname = "dead"\nseed = 7\n\n[defaults]\n{line}\n'
        '[[cohorts]]\nname = "bulk"\ncount = 64\nid_style = "mac-upper"\n'
    )
    target = f"http://127.0.0.1:{free_port()}"
    return run_soak_sync(SoakOptions(fleet=fleet, target=target, concurrency=4, **options))


def test_devices_back_off_from_a_dead_server_unless_told_to_hammer() -> None:
    """By default a device resends every 2 s while nothing answers, and its lane waits with
    it; ``habits = "none"`` is the explicit harsh choice: the lanes go straight on."""
    patient = _dead_target_run(None, duration=3.0)
    # Each of the 4 lanes: the first send, then resends 2 s apart: 2 sends in 3 s.
    assert patient.results.sent == 8, patient.results.by_status
    assert patient.results.extra["firmware_resends"] == 4
    assert patient.results.by_status["connection_error"] == 8
    [outage] = patient.results.outages
    assert outage["devices_hit"] == 4 and outage["devices_not_back"] == 4
    assert outage["recovery_s"] is None  # it never came back

    hammer = _dead_target_run("none", claims=400)
    assert hammer.results.sent == 400 and hammer.results.extra["firmware_resends"] == 0


def test_a_claims_run_against_a_dead_server_gives_up_and_says_why() -> None:
    """Devices that back off would wait on a dead server for ever in a run without a
    deadline; the devices give up after their attempts (the live path's five)."""
    outcome = _dead_target_run(None, claims=8, firmware_time_scale=0.01)
    extra = outcome.results.extra
    # Each of the 8 planned first claims: 3 POSTs (the first, 2 resends), then 4 fresh
    # attempts of 3 POSTs each (the live path's loop of 3, CONTRACT.md section 1).
    assert extra["firmware_gave_up"] == 8, extra
    assert extra["firmware_attempts"] == 8 * 4 and extra["firmware_resends"] == 8 * 5 * 2
    assert outcome.results.sent == 8 * 5 * 3
