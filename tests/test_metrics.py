"""Harness metrics: exposition passes promtool, pushgateway and textfile carry the same numbers."""

from __future__ import annotations

import os
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from harness.errors import HarnessInputError
from harness.metrics import (
    SoakMetrics,
    compare_server_deltas,
    parse_server_counters,
    push_to_gateway,
    serve_metrics,
    server_counters_section,
    write_textfile,
)
from harness.results import RunResults
from tests.support import require_binary

CLAIMS = [
    ("first_claim", "200", 0.05),
    ("first_claim", "200", 0.3),
    ("idempotent_retry", "409", 0.7),
    ("first_claim", "timeout", 10.0),
    ("case_variant", "401", 1.5),
]


def _fed(run_id: str = "run-7") -> tuple[SoakMetrics, RunResults]:
    metrics = SoakMetrics(run_id=run_id, fleet="teddy-v5")
    res = RunResults()
    metrics.on_start({"run_id": run_id, "fleet": "teddy-v5", "devices": 40})
    for scenario, status, lat in CLAIMS:
        metrics.on_claim(scenario, status, lat, lat + 0.2)
        res.record_claim(scenario, status, lat, lat + 0.2)
    metrics.on_violation("idempotent_retry")
    return metrics, res


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_exposition_during_a_run_passes_promtool() -> None:
    promtool = require_binary("promtool", "prometheus")
    metrics, _ = _fed()
    server = serve_metrics(metrics.registry, 0, host="127.0.0.1")
    try:
        assert server.port > 0
        text = _get(server.url)
    finally:
        server.stop()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    got = _samples(text)
    assert (
        got[("harness_claims_total", frozenset({("outcome", "200"), ("scenario", "first_claim")}))]
        == 2
    )
    assert (
        got[
            (
                "harness_claims_total",
                frozenset({("outcome", "timeout"), ("scenario", "first_claim")}),
            )
        ]
        == 1
    )
    # The SLO buckets over 0.05, 0.3, 0.7, 10 and 1.5 s (le: value <= edge).
    cumulative = {"0.2": 1, "0.5": 2, "1.0": 3, "2.0": 4, "5.0": 4, "+Inf": 5}
    for le, n in cumulative.items():
        assert got[("harness_claim_latency_seconds_bucket", frozenset({("le", le)}))] == n
    assert got[("harness_claim_latency_seconds_count", frozenset())] == 5
    assert got[("harness_claim_latency_seconds_sum", frozenset())] == pytest.approx(12.55)
    # From the schedule every claim is 0.2 s later: 0.25, 0.5, 0.9, 10.2, 1.7.
    sched = {"0.2": 0, "0.5": 2, "1.0": 3, "2.0": 4, "5.0": 4, "+Inf": 5}
    for le, n in sched.items():
        assert got[("harness_claim_scheduled_latency_seconds_bucket", frozenset({("le", le)}))] == n
    assert got[("harness_check_violations_total", frozenset({("check", "idempotent_retry")}))] == 1
    assert got[("harness_check_violations_total", frozenset({("check", "first_claim")}))] == 0
    assert got[("harness_devices_active", frozenset())] == 40
    # Bounded labels only: no label carries a device ID or anything per-claim.
    label_names = {k for (_, labels) in got for (k, _) in labels}
    assert label_names <= {"outcome", "scenario", "le", "check", "run_id", "fleet"}
    for name, labels in got:
        assert all(len(v) < 40 for _, v in labels), name


def test_on_finish_tops_up_to_the_final_results() -> None:
    metrics, res = _fed()
    # Claims a worker process made: in the results, never seen by this observer.
    for _ in range(5):
        res.record_claim("first_claim", "200", 0.01)
    res.check("replay_conflict").record(False)
    metrics.on_finish(res)
    r = metrics.registry
    assert (
        r.get_sample_value("harness_claims_total", {"outcome": "200", "scenario": "first_claim"})
        == res.by_scenario[("first_claim", "200")]
    )
    assert r.get_sample_value("harness_check_violations_total", {"check": "replay_conflict"}) == 1
    assert r.get_sample_value("harness_devices_active") == 0
    # The histograms now hold every claim of the results, bucketed at the SLO edges.
    assert r.get_sample_value("harness_claim_latency_seconds_count") == res.sent
    for edge in (0.2, 0.5, 1.0, 2.0, 5.0):
        assert r.get_sample_value(
            "harness_claim_latency_seconds_bucket", {"le": str(edge)}
        ) == res.latency.count_at_or_below(edge)
    assert r.get_sample_value("harness_claim_latency_seconds_sum") == pytest.approx(
        sum(lat for _, _, lat in CLAIMS) + 5 * 0.01, rel=1e-3
    )


def test_push_lands_under_the_run_id_grouping_key(pushgateway: str) -> None:
    metrics, res = _fed("run-42")
    metrics.on_finish(res)
    key = push_to_gateway(pushgateway, metrics.registry, "run-42", shard=3)
    assert key == {"run_id": "run-42", "shard": "3"}
    text = _get(f"{pushgateway}/metrics")
    found = [
        s
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "harness_claims_total"
    ]
    assert found, text[:2000]
    labels = found[0].labels
    assert labels["job"] == "harness_soak" and labels["run_id"] == "run-42"
    assert labels["shard"] == "3"
    total = sum(s.value for s in found if s.labels.get("run_id") == "run-42")
    assert total == res.sent


def test_push_to_nowhere_is_one_input_error() -> None:
    from tests.support import free_port

    registry = CollectorRegistry()
    with pytest.raises(HarnessInputError, match="--pushgateway"):
        push_to_gateway(f"http://127.0.0.1:{free_port()}", registry, "run-1", timeout=2)
    with pytest.raises(HarnessInputError, match="--pushgateway"):
        push_to_gateway("ftp://example", registry, "run-1")
    with pytest.raises(HarnessInputError, match="run_id"):
        push_to_gateway("http://127.0.0.1:1", registry, "run/../x")


def test_textfile_is_written_whole_and_parses(tmp_path: Path) -> None:
    metrics, res = _fed("run 9/x")
    metrics.on_finish(res)
    path = write_textfile(tmp_path, metrics.registry, "run 9/x")
    assert path.name == "harness_soak_run_9_x.prom"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    got = _samples(path.read_text())
    assert (
        got[("harness_claims_total", frozenset({("outcome", "401"), ("scenario", "case_variant")}))]
        == 1
    )
    assert got[("harness_run_info", frozenset({("run_id", "run 9/x"), ("fleet", "teddy-v5")}))] == 1
    with pytest.raises(HarnessInputError, match="not a directory"):
        write_textfile(tmp_path / "nope", metrics.registry, "r")


def test_server_counter_comparison() -> None:
    before_text = "# TYPE claim_success_total counter\nclaim_success_total 10\n"
    after_text = (
        "# TYPE claim_success counter\nclaim_success_total 13\n"
        "# TYPE claim_replay_cached counter\nclaim_replay_cached_total 1\n"
        "# TYPE claim_replay_conflict counter\nclaim_replay_conflict_total 2\n"
    )
    before = parse_server_counters(before_text) | {
        "claim_replay_cached_total": 0.0,
        "claim_replay_conflict_total": 0.0,
    }
    after = parse_server_counters(after_text)
    res = RunResults()
    for status in ("200", "200", "200", "200", "409"):
        res.record_claim("first_claim", status, 0.01)
    rows = {
        r["counter"]: r
        for r in compare_server_deltas(before, after, res, {"idempotent_replays": 1})
    }
    assert rows["claim_success_total"] == {
        "counter": "claim_success_total",
        "server_delta": 3.0,
        "harness_observed": 3,
        "agrees": True,
    }
    assert rows["claim_replay_cached_total"]["agrees"] is True
    assert rows["claim_replay_conflict_total"]["agrees"] is False  # server 2, harness 1
    assert rows["claim_auto_register_total"]["agrees"] is None  # not exposed, not recorded
    section = server_counters_section(list(rows.values()))
    assert section["agrees"] is False
