"""The interval series: exact across shards, bounded in points, percentiles to 3 digits."""

from __future__ import annotations

import random
from pathlib import Path

from harness.results import LatencyHistogram, RunResults
from harness.series import MAX_POINTS, IntervalSeries, percentile

STATUSES = ("200", "200", "200", "409", "401", "timeout")


def _claims(n: int, span_s: float, seed: int = 7) -> list[tuple[float, str, float, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        end = 1000.0 + rng.random() * span_s
        lat = rng.lognormvariate(-3, 1)
        out.append((end, rng.choice(STATUSES), lat, lat + rng.random() * 0.05))
    return out


def _fed(claims: list[tuple[float, str, float, float]], offset: float = 1.7e9) -> IntervalSeries:
    s = IntervalSeries()
    s.offset = offset  # one wall clock for every part
    for end, status, lat, sched in claims:
        s.add(end, status, lat, sched)
        if status == "401":
            s.violation(end, "case_insensitive_id")
    return s


def test_four_shard_reports_merge_into_the_one_process_series_exactly() -> None:
    claims = _claims(20_000, 90.0)
    whole = _fed(claims)
    merged = RunResults()
    for k in range(4):
        part = RunResults()
        part.series = _fed(claims[k::4])
        merged.merge(RunResults.from_dict(part.to_dict()))  # through the JSON report
    assert merged.series.to_dict() == whole.to_dict()
    points = whole.to_dict()["points"]
    assert sum(sum(p["by_status"].values()) for p in points) == 20_000
    assert sum(p["violations"].get("case_insensitive_id", 0) for p in points) == sum(
        1 for c in claims if c[1] == "401"
    )


def test_a_long_run_is_bounded_in_points_and_still_merges_with_a_short_one() -> None:
    long_claims = _claims(5_000, 3 * MAX_POINTS)  # 3x the points a 1 s step allows
    short_claims = _claims(500, 30.0, seed=8)
    one = _fed(long_claims + short_claims)
    assert one.step == 4.0 and len(one.points) <= MAX_POINTS
    a, b = _fed(long_claims), _fed(short_claims)
    assert b.step == 1.0
    b.merge(a)
    assert b.to_dict() == one.to_dict()


def test_interval_percentiles_are_the_hdr_histograms_exactly() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-2, 1.2) for _ in range(3_000)]
    s = IntervalSeries()
    s.offset = 0.0
    hist = LatencyHistogram()
    for v in values:
        s.add(5.5, "200", v, v)
        hist.record(v)
    s.drain()
    [point] = s.points.values()
    for p in (50, 95, 99):
        ours, theirs = percentile(point.latency, p), hist.percentile(p)
        assert ours == theirs, (p, ours, theirs)


def test_the_report_carries_the_series_and_a_run_without_one_does_not() -> None:
    res = RunResults()
    assert "series" not in res.to_dict()
    res.series = _fed(_claims(100, 5.0))
    data = res.to_dict()["series"]
    assert data["step_s"] == 1.0
    assert [p["t"] for p in data["points"]] == sorted(p["t"] for p in data["points"])
    assert set(data["points"][0]["latency_seconds"]) == {"p50", "p95", "p99"}


def test_a_real_soak_accounts_every_claim_and_violation_in_its_series() -> None:
    import asyncio

    from harness.run.options import SoakOptions
    from harness.run.runner import run_soak

    options = SoakOptions(claims=600, concurrency=20, devices=200)
    outcome = asyncio.run(run_soak(options))
    data = outcome.results.to_dict()
    points = data["series"]["points"]
    assert points
    by_status: dict[str, int] = {}
    violations: dict[str, int] = {}
    for p in points:
        for k, n in p["by_status"].items():
            by_status[k] = by_status.get(k, 0) + n
        for k, n in p["violations"].items():
            violations[k] = violations.get(k, 0) + n
    assert by_status == data["claims"]["by_status"]
    assert violations == {c["name"]: c["violations"] for c in data["checks"] if c["violations"]}
    counted = sum(n for p in points for _b, n in p["buckets"]["latency"])
    assert counted == data["latency_seconds"]["count"] == data["claims"]["sent"]


def test_report_merge_of_four_shard_files_gives_the_one_process_series(tmp_path: Path) -> None:
    """Through ``harness report merge``'s own path: four shard report files, merged."""
    from harness.cli.report import merge_reports
    from harness.report import write_report

    claims = _claims(8_000, 40.0, seed=11)
    whole = RunResults()
    whole.series = _fed(claims)
    for status in (c[1] for c in claims):
        whole.record_claim("first_claim", status, 0.01)
    paths = []
    for k in range(4):
        part = RunResults()
        part.series = _fed(claims[k::4])
        for status in (c[1] for c in claims[k::4]):
            part.record_claim("first_claim", status, 0.01)
        report = {**part.to_dict(), "run_id": "r", "fleet": "f", "shard": f"{k}/4"}
        paths.append(write_report(report, tmp_path / f"shard{k}.json"))
    merged = merge_reports(paths)
    assert merged["series"] == whole.to_dict()["series"]
    assert sum(sum(p["by_status"].values()) for p in merged["series"]["points"]) == 8_000
