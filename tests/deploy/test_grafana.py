"""deploy/grafana/harness.json: built by its script, and every query in it is real.

A real Prometheus scrapes a running soak's ``--metrics-port`` (claims, verdicts,
latency, MQTT sessions with short-lived tokens, so refreshes happen) and the
reference server it drives (its own ``claim_*_total``), once a second. While the
run goes, every query of every panel is evaluated through Prometheus' HTTP API
with Grafana's ``$__rate_interval`` given a value; each must parse and return at
least one series.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.fleet import load_fleet
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from tests.support import HARNESS, ROOT, free_port, require_binary
from tests.support.prometheus import PrometheusServer

DASHBOARD = ROOT / "deploy" / "grafana" / "harness.json"
RATE_INTERVAL = "10s"  # what Grafana gives $__rate_interval at a 1 s scrape, rounded up


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboard", DASHBOARD.with_name("build_dashboard.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets") or []
    ]
    assert len(found) >= 15
    return found


def test_the_committed_dashboard_is_what_its_builder_writes() -> None:
    assert DASHBOARD.read_text() == _builder().build(), (
        "deploy/grafana/harness.json is stale: run python deploy/grafana/build_dashboard.py"
    )
    titles = {title for title, _ in _queries()}
    for want in (
        "Claims per second by outcome",
        "Claim latency heatmap",
        "Violations by check",
        "Active devices",
        "Server counters beside the harness",
        "MQTT sessions connected",
    ):
        assert want in titles


# Queries whose figures must move during the run, not only exist: the claims, their
# latency, the devices, the server's successes and the sessions. (Violations, 409s and
# refusals may be zero in a healthy interval; they must still be real series.)
MOVING = (
    "harness_claims_total[",
    "harness_claim_latency_seconds_bucket",
    "harness_devices_active",
    "claim_success_total",
    "harness_mqtt_sessions_connected",
    "harness_mqtt_heartbeat_latency_seconds_bucket",
)


def _answer(prom: PrometheusServer, expr: str) -> tuple[bool, str]:
    """Whether ``expr`` answers as its panel needs: parses, returns series, each with the
    label it is summed by, at least one finite value, and a non-zero one if it must move."""
    answer: dict[str, Any] = prom.query(expr.replace("$__rate_interval", RATE_INTERVAL))
    if answer.get("status") != "success":
        return False, f"error: {answer.get('error')}"
    result = answer["data"]["result"]
    if not result:
        return False, "no series"
    by = re.match(r"sum by \((\w+)\)", expr)
    if by and not all(by.group(1) in r["metric"] for r in result):
        return False, f"a series without its {by.group(1)} label: {result[:2]}"
    values = [float(r["value"][1]) for r in result]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return False, f"no finite value: {values[:4]}"
    if any(m in expr for m in MOVING) and not any(v > 0 for v in finite):
        return False, f"not moving: {values[:4]}"
    return True, f"{len(result)} series"


def test_every_dashboard_query_returns_series_from_a_real_prometheus(tmp_path: Path) -> None:
    require_binary("mosquitto", "mosquitto")
    promtool = require_binary("promtool", "prometheus")
    queries = _queries()
    assert all("$" not in e.replace("$__rate_interval", "") for _, e in queries)
    # The online fleet (sessions, refreshes) with replays, so that 409s come back too.
    fleet = tmp_path / "online.toml"
    text = (ROOT / "fleets" / "online.toml").read_text()
    fleet.write_text(text.replace("[defaults]\n", "[defaults]\nreplay_other_hmac = 0.1\n"))
    config = ServerConfig(seed=load_fleet(fleet).to_seed(), access_ttl_s=10)
    metrics_port = free_port()
    with EmbeddedServer(config) as server:
        soak = subprocess.Popen(
            [
                *HARNESS,
                "soak",
                "--target",
                server.url,
                "--fleet",
                str(fleet),
                "--duration",
                "20",
                "--rate",
                "40",
                "--workers",
                "1",  # the parent of --workers has no live MQTT figures yet
                "--access-ttl",
                "10",
                "--mqtt-hold",
                "8s",
                "--no-progress",
                "--metrics-port",
                str(metrics_port),
                "--report",
                str(tmp_path / "r.json"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "JWT_SECRET": config.jwt_secret},
        )
        targets = [("harness", f"127.0.0.1:{metrics_port}"), ("server", f"127.0.0.1:{server.port}")]
        answers: dict[str, str] = {}
        try:
            with PrometheusServer(targets) as prom:
                missing = {expr: title for title, expr in queries}
                scraped = ""  # the run's live exposition, for promtool
                # Until every query has answered with series once, while the soak runs.
                while soak.poll() is None and missing:
                    scraped = _scrape(metrics_port) or scraped
                    for expr in list(missing):
                        ok, said = _answer(prom, expr)
                        answers[expr] = said
                        if ok:
                            del missing[expr]
                    time.sleep(1.0)
                healthy = prom.healthy_targets() if missing else set()
        finally:
            if soak.poll() is None:
                soak.terminate()
            out, err = soak.communicate(timeout=120)
    failing = {f"{title}: {expr}": answers.get(expr) for expr, title in missing.items()}
    assert not failing, (failing, f"targets up: {healthy}", out[-2000:], err[-2000:])
    # What Prometheus scraped passes promtool too, MQTT families included.
    assert "harness_mqtt_heartbeat_latency_seconds_bucket" in scraped
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=scraped,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""
