"""A real 4-shard run, merged by ``harness report merge``, equals the 1-process run in every count.

Both runs play the same deterministic fleet and plan against a fresh embedded
reference server each (same seed data, so the same answers). Timing-dependent
figures (latency values, late starts) differ between any two runs and are not
compared; every count is.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.cli.report import merge_reports
from harness.report import build_report, write_report
from harness.results import RunResults
from harness.run import SoakOptions, SoakOutcome, run_soak_sync
from harness.run.options import prepare_fleet
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer

CLAIMS = 400
SHARDS = 4


def _run(options: SoakOptions, shards: int) -> list[SoakOutcome]:
    fleet = prepare_fleet(options)
    with EmbeddedServer(ServerConfig(seed=fleet.to_seed())) as server:
        base = replace(options, fleet=fleet, target=server.url, jwt_secret=server.jwt_secret)
        if shards == 1:
            return [run_soak_sync(base)]
        return [run_soak_sync(replace(base, shard=(i, shards))) for i in range(shards)]


def test_four_shards_merged_equal_one_process(tmp_path: Path) -> None:
    options = SoakOptions(
        fleet="fleets/soak.toml", devices=160, claims=CLAIMS, concurrency=20, run_id="one-job"
    )
    (whole,) = _run(options, 1)
    parts = _run(options, SHARDS)
    paths = []
    for i, outcome in enumerate(parts):
        assert outcome.info["shard"] == f"{i}/{SHARDS}"
        paths.append(write_report(build_report(outcome), tmp_path / f"shard-{i}.json"))
    merged_report = merge_reports(paths)
    merged = RunResults.from_dict(merged_report)
    one = whole.results

    assert merged_report["shards"] == [f"{i}/{SHARDS}" for i in range(SHARDS)]
    assert one.sent == CLAIMS == merged.sent
    assert dict(merged.by_status) == dict(one.by_status)
    assert dict(merged.by_scenario) == dict(one.by_scenario)
    assert merged.latency.count == one.latency.count == CLAIMS
    assert merged.latency_scheduled.count == CLAIMS
    assert {n: (t.evaluated, t.violations) for n, t in merged.checks.items()} == {
        n: (t.evaluated, t.violations) for n, t in one.checks.items()
    }
    whole_report = build_report(whole)
    assert merged_report["by_cohort"] == whole_report["by_cohort"]
    assert merged_report["extra"] == whole_report["extra"]
    merged_tokens, whole_tokens = merged_report["token_checks"], whole_report["token_checks"]
    assert set(merged_tokens) == set(whole_tokens)
    for key in ("tokens_checked", "signatures_verified", "signature_sampling_rate", "pyjwt_every"):
        assert merged_tokens[key] == whole_tokens[key], key
    # every pyjwt_every-th token of each shard: the shards' counts add up to about the whole's
    assert abs(merged_tokens["pyjwt_cross_checked"] - whole_tokens["pyjwt_cross_checked"]) <= 4
    assert len(merged_report["by_cohort"]) > 3  # the fleet's mix really was exercised
    assert len(one.by_status) > 2
