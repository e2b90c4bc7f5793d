"""``--metrics-port`` with ``--workers 2``: /metrics sums the worker processes during the run.

A real ``harness serve`` and a real ``harness soak`` subprocess; /metrics is scraped
while the workers run and checked against each worker's own snapshot file, promtool
and the final report and textfile.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.flags import Flags
from harness.fleet import load_fleet
from harness.metrics import SoakMetrics, read_snapshot, write_snapshot
from harness.results import RunResults
from tests.support import HARNESS, ROOT, free_port, require_binary

SOAK = ROOT / "fleets" / "soak.toml"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    """``harness serve`` holding the soak fleet's devices, as a --target."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(load_fleet(SOAK).seed_export()))
    port = free_port()
    cmd = [*HARNESS, "serve", "--port", str(port), "--seed", str(seed), "--log-file", "none"]
    env = {k: v for k, v in os.environ.items() if k not in Flags.ENV_NAMES}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    if not proc.stdout.readline():
        proc.kill()
        pytest.fail("harness serve did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError):  # not up yet, or already gone
        return None


def _claims(text: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "harness_claims_total"
    )


def _value(text: str, name: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and not s.labels:
                return s.value
    return None


def _shape(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Family name -> (type, label names): what must match between one and two workers."""
    return {
        fam.name: (fam.type, frozenset(k for s in fam.samples for k in s.labels))
        for fam in text_string_to_metric_families(text)
    }


def _worker_claims(tmpdir: Path) -> list[int] | None:
    """Each worker's claims in its own snapshot file now (None until both wrote one)."""
    found = []
    for i in range(2):
        paths = list(tmpdir.glob(f"harness-workers-*/metrics-{i}.json"))
        snap = read_snapshot(paths[0]) if len(paths) == 1 else None
        if snap is None:
            return None
        found.append(sum(snap.claims.values()))
    return found


def test_two_workers_metrics_are_summed_live(target: str, tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    report, prom_dir, workdir = tmp_path / "report.json", tmp_path / "prom", tmp_path / "tmp"
    prom_dir.mkdir()
    workdir.mkdir()  # TMPDIR of the run: where the workers' snapshot files can be read
    soak = subprocess.Popen(
        [*HARNESS, "soak", "--target", target, "--workers", "2", "--metrics-port", str(port),
         "--duration", "6", "--no-progress", "--report", str(report),
         "--textfile", str(prom_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(workdir)},
    )  # fmt: skip
    mid_run: list[str] = []  # scrapes while both workers were running
    both: list[tuple[list[int], float, list[int]]] = []  # (files before, scrape, files after)
    last: str | None = None
    try:
        while soak.poll() is None:
            before = _worker_claims(workdir)
            text = _scrape(url)
            after = _worker_claims(workdir)
            if text is not None:
                last = text
                running = _value(text, "harness_run_running") == 1 and soak.poll() is None
                if running and _claims(text) > 0:
                    mid_run.append(text)
                    if before and after and min(before) > 0:
                        both.append((before, _claims(text), after))
            time.sleep(0.2)
        out, err = soak.communicate(timeout=60)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait(10)
    assert soak.returncode == 0, out + err
    sent = json.loads(report.read_text())["claims"]["sent"]
    assert mid_run, "no scrape during the run saw a claim"
    # Several scrapes while the run went on, and the figures moved between them.
    assert len({_claims(t) for t in mid_run}) >= 2, [_claims(t) for t in mid_run]
    check = subprocess.run(
        [promtool, "check", "metrics"], input=mid_run[-1], capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # Both workers counted and /metrics held their sum: the files read just before a
    # scrape are a floor, the files read just after it a ceiling.
    assert both, "no scrape while both workers' snapshot files held claims"
    for files_before, scraped, files_after in both:
        assert sum(files_before) <= scraped <= sum(files_after), (files_before, files_after)
        assert scraped > max(files_before)  # more than one worker alone
    # While both ran, the devices gauge was their two slices summed (each worker's own
    # on_finish sets its slice to 0, so the last scrapes may show fewer).
    devices = max(_value(t, "harness_devices_active") or 0.0 for t in mid_run)
    assert devices == len(load_fleet(SOAK))
    assert 0 < _claims(mid_run[-1]) <= sent
    assert last is not None
    if _value(last, "harness_run_running") == 0:  # scraped after the end: the final figures
        assert _claims(last) == sent
    # What is written at the end (the textfile) is the report's, with the live shape.
    (prom,) = prom_dir.glob("*.prom")
    final = prom.read_text()
    assert _claims(final) == sent
    assert _value(final, "harness_claim_latency_seconds_count") == sent
    assert _shape(final) == _shape(mid_run[-1])


def test_one_and_two_workers_serve_the_same_families(target: str, tmp_path: Path) -> None:
    """The summed exposition has the one-process run's names, types and label names."""
    shapes = []
    for workers in ("1", "2"):
        port = free_port()
        soak = subprocess.Popen(
            [*HARNESS, "soak", "--target", target, "--workers", workers, "--metrics-port",
             str(port), "--duration", "4", "--no-progress"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen = None
        try:
            while soak.poll() is None and seen is None:
                text = _scrape(f"http://127.0.0.1:{port}/metrics")
                if text is not None and _claims(text) > 0:
                    seen = text
                time.sleep(0.2)
            out, err = soak.communicate(timeout=60)
        finally:
            if soak.poll() is None:
                soak.kill()
                soak.wait(10)
        assert soak.returncode == 0, out + err
        assert seen is not None, f"--workers {workers}: no scrape saw a claim"
        shapes.append(_shape(seen))
    assert shapes[0] == shapes[1]
    assert {"harness_claims", "harness_claim_latency_seconds", "harness_devices_active"} <= set(
        shapes[0]
    )


def _worker(path: Path, claims: list[tuple[str, str, float]], devices: int) -> SoakMetrics:
    metrics = SoakMetrics()
    metrics.on_start({"devices": devices})
    for scenario, status, latency in claims:
        metrics.on_claim(scenario, status, latency)
    write_snapshot(path, metrics)
    return metrics


def test_follow_sums_snapshot_files_and_never_goes_down(tmp_path: Path) -> None:
    a, b = tmp_path / "metrics-0.json", tmp_path / "metrics-1.json"
    parent = SoakMetrics(run_id="r", fleet="f")
    parent.follow([a, b])
    r = parent.registry
    assert r.get_sample_value("harness_claims_total", {"outcome": "200", "scenario": "x"}) is None
    one = _worker(a, [("x", "200", 0.1), ("x", "200", 0.3), ("y", "409", 3.0)], devices=5)
    _worker(b, [("x", "200", 0.7)], devices=4)
    ok = {"outcome": "200", "scenario": "x"}
    assert r.get_sample_value("harness_claims_total", ok) == 3
    assert r.get_sample_value("harness_claims_total", {"outcome": "409", "scenario": "y"}) == 1
    assert r.get_sample_value("harness_claim_latency_seconds_bucket", {"le": "0.5"}) == 2
    assert r.get_sample_value("harness_claim_latency_seconds_count") == 4
    assert r.get_sample_value("harness_claim_latency_seconds_sum") == pytest.approx(4.1)
    assert r.get_sample_value("harness_devices_active") == 9
    one.on_violation("first_claim")
    write_snapshot(a, one)
    assert r.get_sample_value("harness_check_violations_total", {"check": "first_claim"}) == 1
    b.unlink()  # a worker's file gone: its last read still counts
    assert r.get_sample_value("harness_claims_total", ok) == 3
    # The end: the merged results, topped up once, not added to what the files said.
    results = RunResults()
    for scenario, status, latency in [("x", "200", 0.1), ("x", "200", 0.3), ("y", "409", 3.0),
                                      ("x", "200", 0.7)]:  # fmt: skip
        results.record_claim(scenario, status, latency)
    results.check("first_claim").record(False)
    parent.on_finish(results)
    assert r.get_sample_value("harness_claims_total", ok) == 3
    assert r.get_sample_value("harness_claim_latency_seconds_count") == 4
    assert r.get_sample_value("harness_check_violations_total", {"check": "first_claim"}) == 1
    assert r.get_sample_value("harness_devices_active") == 0
