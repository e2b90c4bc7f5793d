"""An ``https://`` target, as a user runs it: verified by default, ``--ca-bundle``, ``--insecure``.

The reference server holding the teddy-v5 fleet sits behind a real TLS front
(``tests.support.tls_front``) whose certificate a test CA signed. The commands run
as processes; the CA is unknown to the system, so without ``--ca-bundle`` every
connection fails verification, and that must be one line and exit 2, not a run
of connection errors.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import HarnessInputError
from harness.fleet import load_fleet
from harness.run import SoakJob, SoakOptions, run_job, run_soak_sync
from harness.run.options import server_profile
from harness.server.embedded import EmbeddedServer, embedded_server
from harness.tls import INSECURE_WARNING
from tests.support import HARNESS, ROOT
from tests.support.tls_front import Pki, TlsFront, make_pki

TEDDY = ROOT / "fleets" / "teddy-v5.toml"
VERIFY_FAILED = "TLS certificate verification failed"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The reference server with the teddy-v5 fleet's rows, as its profile declares."""
    fleet = load_fleet(TEDDY)
    profile = server_profile(SoakOptions(fleet=fleet), fleet)
    with embedded_server(profile, fleet.to_seed(), mode="process") as server:
        yield server


@pytest.fixture(scope="module")
def front(plain: EmbeddedServer, pki: Pki) -> Iterator[TlsFront]:
    with TlsFront(pki.server_context(), "127.0.0.1", plain.port) as tls:
        yield tls


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def _soak(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run("soak", "--target", url, "--fleet", str(TEDDY), "--claims", "200",
                "--no-progress", *extra)  # fmt: skip


# --- soak ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_soak_with_the_ca_bundle_passes_over_tls(
    front: TlsFront, pki: Pki, tmp_path: Path, workers: str
) -> None:
    """One process, and two workers (each builds its own context from the options)."""
    report = tmp_path / "r.json"
    before = front.connections
    proc = _soak(front.url, "--ca-bundle", str(pki.ca), "--workers", workers,
                 "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert INSECURE_WARNING not in proc.stderr
    data = json.loads(report.read_text())
    assert data["passed"] and data["claims"]["sent"] >= 200
    assert data["claims"]["by_status"].get("200", 0) > 0
    assert "connection_error" not in data["claims"]["by_status"]
    assert data["run"]["target"] == front.url and data["run"]["preflight"]["claims"]
    # The server's own counters were scraped over TLS too, and agree.
    assert data["server_counters"]["agrees"] is True, data["server_counters"]
    assert front.connections - before >= 200  # fresh connections: every claim went via TLS


def test_without_the_ca_bundle_the_run_is_refused_in_one_line(front: TlsFront) -> None:
    connections = front.connections
    proc = _soak(front.url)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert VERIFY_FAILED in proc.stderr and front.url in proc.stderr
    assert "--ca-bundle" in proc.stderr and "--insecure" in proc.stderr
    assert front.connections == connections  # no handshake completed: the client refused


def test_the_wrong_ca_is_refused_in_one_line(front: TlsFront, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path)
    proc = _soak(front.url, "--ca-bundle", str(stranger.ca))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and VERIFY_FAILED in proc.stderr


def test_insecure_passes_and_warns_once(front: TlsFront, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = _soak(front.url, "--insecure", "--workers", "2", "--report", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.splitlines().count(INSECURE_WARNING) == 1, proc.stderr
    assert json.loads(report.read_text())["passed"]


def test_insecure_warns_on_every_run_even_without_a_target() -> None:
    proc = _run("soak", "--insecure", "--fleet", str(TEDDY), "--claims", "20", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.splitlines().count(INSECURE_WARNING) == 1


def test_insecure_with_a_ca_bundle_is_one_line(front: TlsFront, pki: Pki) -> None:
    proc = _soak(front.url, "--insecure", "--ca-bundle", str(pki.ca))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "--insecure" in proc.stderr
    assert "not both" in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage"])
def test_a_bad_ca_bundle_is_one_line_exit_2(front: TlsFront, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ca.pem"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n not a certificate at all")
    says = {"missing": "no such file", "directory": "is a directory",
            "garbage": "no PEM certificate"}[kind]  # fmt: skip
    connections = front.connections
    proc = _soak(front.url, "--ca-bundle", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--ca-bundle: {says}: {path}" in proc.stderr
    assert front.connections == connections  # refused before anything was sent


# --- the Python API ---------------------------------------------------------------------------


def test_run_soak_sync_with_a_ca_bundle(front: TlsFront, pki: Pki) -> None:
    outcome = run_soak_sync(
        SoakOptions(target=front.url, fleet=TEDDY, claims=60, ca_bundle=str(pki.ca))
    )
    assert outcome.passed and outcome.results.by_status.get("200", 0) > 0
    assert "connection_error" not in outcome.results.by_status


def test_run_soak_sync_without_it_answers_nothing(front: TlsFront) -> None:
    """No preflight in a bare run: every claim is a connection error, and judged so."""
    options = SoakOptions(target=front.url, fleet=TEDDY, claims=20, firmware_time_scale=0.0)
    outcome = run_soak_sync(options)  # no waits: the live firmware retries a failure at once
    assert not outcome.passed
    assert outcome.results.by_status == {"connection_error": outcome.results.sent}


def test_run_job_without_it_is_an_input_error(front: TlsFront) -> None:
    with pytest.raises(HarnessInputError, match=VERIFY_FAILED):
        run_job(SoakJob(SoakOptions(target=front.url, fleet=TEDDY, claims=20), quiet=True))


# --- compat, probe ------------------------------------------------------------------------------


def test_compat_over_tls_says_what_it_says_over_http(
    front: TlsFront, plain: EmbeddedServer, pki: Pki
) -> None:
    args = ("--fleet", str(TEDDY), "--claims-per-cohort", "10")
    over_tls = _run("compat", "--target", front.url, "--ca-bundle", str(pki.ca), *args)
    over_http = _run("compat", "--target", plain.url, *args)
    assert over_tls.returncode == over_http.returncode, over_tls.stdout + over_tls.stderr
    verdict = [line for line in over_tls.stdout.splitlines() if "GO" in line]
    assert verdict and verdict == [ln for ln in over_http.stdout.splitlines() if "GO" in ln]
    refused = _run("compat", "--target", front.url, *args)
    assert refused.returncode == 2 and VERIFY_FAILED in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_probe_over_tls(front: TlsFront, pki: Pki) -> None:
    proc = _run("probe", "--target", front.url, "--fleet", str(TEDDY), "--ca-bundle", str(pki.ca))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"probe of {front.url}" in proc.stdout and "v5.0" in proc.stdout
    refused = _run("probe", "--target", front.url, "--fleet", str(TEDDY))
    assert refused.returncode == 2 and VERIFY_FAILED in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_hil_run_refuses_a_bad_certificate_before_any_board_comes_up(front: TlsFront) -> None:
    proc = _run("hil", "run", "--bench", str(ROOT / "hil" / "bench.example.toml"),
                "--target", front.url)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and VERIFY_FAILED in proc.stderr


def test_hil_run_over_tls_with_the_ca_bundle(pki: Pki, tmp_path: Path) -> None:
    """Two virtual boards, both provisioned on a server behind the TLS front: every claim
    answered over TLS (``run_bench`` is what ``hil run`` calls with the two options)."""
    import dataclasses

    from harness.hil.bench import load_bench
    from harness.hil.run import run_bench
    from harness.protocol import derive_oob_v5, mac_to_device_id
    from harness.server.config import ServerConfig
    from harness.server.seed import Seed, SeedChild, SeedDevice
    from tests.hil.conftest import write_bench

    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.0.3", "5.0.3"]))
    ids = [mac_to_device_id(spec.mac or "") for spec in bench.boards]
    seed = Seed(tuple(SeedDevice(d, derive_oob_v5(d)) for d in ids),
                tuple(SeedChild(c) for c in bench.children))  # fmt: skip
    with (
        EmbeddedServer(ServerConfig(seed=seed)) as server,
        TlsFront(pki.server_context(), "127.0.0.1", server.port) as tls,
    ):
        outcome = run_bench(dataclasses.replace(bench, target=tls.url), log_dir=tmp_path / "l",
                            ca_bundle=str(pki.ca))  # fmt: skip
        refused = run_bench(dataclasses.replace(bench, target=tls.url), log_dir=tmp_path / "m")
    assert outcome.passed, outcome.report["checks"]
    assert outcome.report["claims"]["by_status"].get("200", 0) == 8
    assert "connection_error" not in outcome.report["claims"]["by_status"]
    # The same bench without the bundle: the system does not know the CA, nothing answers.
    assert not refused.passed
    assert set(refused.report["claims"]["by_status"]) == {"connection_error"}
