"""Every command with a target first checks it is a claim server that holds the fleet.

Each case is tried as a user would: the commands run as processes against a
real ``harness serve`` (or a plain HTTP server that is no claim server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.flags import Flags
from harness.fleet import load_fleet
from tests.support import HARNESS, ROOT, free_port

SOAK = ROOT / "fleets" / "soak.toml"
TEDDY = ROOT / "fleets" / "teddy-v5.toml"
COMPAT = ROOT / "fleets" / "compat.toml"


def _serve(seed: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [*HARNESS, "serve", "--port", str(port), "--seed", str(seed), "--log-file", "none",
           *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in Flags.ENV_NAMES}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline(), "harness serve did not start"
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def teddy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A reference server holding the teddy-v5 fleet only."""
    seed = tmp_path_factory.mktemp("seed") / "teddy.json"
    seed.write_text(json.dumps(load_fleet(TEDDY).seed_export()))
    proc, url = _serve(seed)
    yield url
    proc.terminate()
    proc.wait(10)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_soak_against_a_target_without_the_fleet_is_exit_2(teddy_server: str) -> None:
    proc = _run("soak", "--target", teddy_server, "--fleet", str(SOAK), "--claims", "50",
                "--no-progress")  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "does not hold this fleet's devices" in proc.stderr
    assert "harness provision export" in proc.stderr


def test_compat_against_a_target_without_the_fleet_is_exit_2(teddy_server: str) -> None:
    proc = _run("compat", "--target", teddy_server, "--fleet", str(COMPAT),
                "--claims-per-cohort", "10")  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does not hold this fleet's devices" in proc.stderr and "GO" not in proc.stdout


def test_probe_with_a_fleet_the_target_does_not_hold_is_exit_2(teddy_server: str) -> None:
    proc = _run("probe", "--target", teddy_server, "--fleet", str(SOAK))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "does not hold this fleet's devices" in proc.stderr


def test_the_fleet_the_target_holds_passes_the_preflight(teddy_server: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = _run("soak", "--target", teddy_server, "--fleet", str(TEDDY), "--claims", "200",
                "--no-progress", "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    claims = json.loads(report.read_text())["run"]["preflight"]["claims"]
    assert claims and all(c["status"] in (200, 401) for c in claims)  # 401: 5.1 signing
    assert {c["cohort"] for c in claims} == {c.name for c in load_fleet(TEDDY).cohorts
                                             if c.provisioned and c.active}  # fmt: skip


def test_compat_declared_wrong_gives_no_verdict(teddy_server: str) -> None:
    """The target holds the fleet but runs v5.0; declared v5-head, every measured cell is
    off the oracle's prediction: no GO from that."""
    proc = _run("compat", "--target", teddy_server, "--fleet", str(TEDDY),
                "--claims-per-cohort", "20", "--profile", "v5-head")  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NO VERDICT" in proc.stdout and "\nGO" not in proc.stdout


def test_a_wrong_claim_path_is_one_line(teddy_server: str) -> None:
    proc = _run("soak", "--target", teddy_server, "--fleet", str(TEDDY), "--claim-path",
                "/api/v2/claim", "--claims", "10", "--no-progress")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no claim endpoint there" in proc.stderr


def test_a_target_that_is_not_a_claim_server_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import time

        for _ in range(100):
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proc = _run("soak", "--target", f"http://127.0.0.1:{port}", "--fleet", str(TEDDY),
                    "--claims", "10", "--no-progress")  # fmt: skip
    finally:
        web.terminate()
        web.wait(10)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "not a claim server" in proc.stderr


def test_a_database_outage_is_measured_not_refused(tmp_path: Path) -> None:
    """v5.0 answers 404 for every device while its PostgreSQL is down (CONTRACT.md section 3):
    with /health/db at 503 the preflight lets the run measure that, and the run fails on it."""
    from harness.server import EmbeddedServer, ServerConfig
    from tests.support.fleet_fixture import write_small_fleet
    from tests.support.services import PostgresServer

    fleet_path = write_small_fleet(tmp_path)
    fleet = load_fleet(fleet_path)
    with PostgresServer() as pg:
        url = pg.create_database("outage")
        config = ServerConfig(seed=fleet.to_seed(), database_url=url, migrate=True)
        with EmbeddedServer(config, mode="process") as server:
            pg.stop()
            report_path = str(tmp_path / "r.json")
            proc = _run("soak", "--target", server.url, "--fleet", str(fleet_path),
                        "--claims", "40", "--no-progress", "--report", report_path)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does not hold" not in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert "/health/db answers 503" in report["run"]["preflight"]["skipped"]
    assert report["claims"]["by_status"].get("404", 0) > 0
