"""A soak through fault windows on the embedded server, over real Redis and PostgreSQL
behind the fault proxy (issue 14's "done when").

One run goes through a share of cut answers, Redis cut, PostgreSQL cut and a
server restart, declared as v5.0 with idempotency on and
DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE=true. Every claim must be accounted for
exactly once (the server's proxy saw one connection per claim), every claim in
a window must get that window's row, and the checklist's continuity promise
must fail with its reason.
"""

from __future__ import annotations

import re

import pytest

from harness.errors import HarnessInputError
from harness.faults.windows import check_windows, parse_fault
from harness.flags import Flags
from harness.fleet import parse_fleet
from harness.run import SoakOptions, SoakOutcome, run_soak_sync
from tests.support import ROOT, require_binary

FAULTS = (
    "server:cut:100@0.3@1s+1s",
    "redis:down@3s+2s",
    "postgres:down@6s+2s",
    "server:restart@9s+1s",
)
# Findings the declared build has whatever the faults: the v5 race (idempotency on).
FINDINGS = {"concurrent_retry", "redis_outage_continuity", "db_outage_strands_devices"}


@pytest.fixture(scope="module")
def faulted() -> SoakOutcome:
    for name, package in (("redis-server", "redis-server"), ("initdb", "postgresql")):
        require_binary(name, package)
    flags = Flags().with_overrides(
        ["ENABLE_IDEMPOTENCY=true", "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE=true"]
    )
    options = SoakOptions(
        fleet=ROOT / "fleets" / "soak.toml",
        duration=12.0,
        concurrency=16,
        flags=flags,
        faults=tuple(parse_fault(f) for f in FAULTS),
    )
    return run_soak_sync(options)


def test_every_claim_is_accounted_for_exactly_once(faulted: SoakOutcome) -> None:
    results = faulted.results
    assert results.sent == sum(results.by_status.values()) == sum(results.by_scenario.values())
    # A fresh connection per claim: the proxy in front of the server saw each one, once.
    assert faulted.info["fault_proxies"]["server"]["accepted"] == results.sent


def test_each_window_happened_and_its_claims_got_its_rows(faulted: SoakOutcome) -> None:
    windows = {w["text"]: w for w in faulted.info["fault_windows"]}
    assert len(windows) == len(FAULTS)
    for w in windows.values():
        assert w["claims"] > 0 and w["off_row"] == 0, w
    rows = faulted.results.checks["fault_rows"]
    assert rows.violations == 0 and rows.evaluated == sum(w["claims"] for w in windows.values())
    by_status = faulted.results.by_status
    assert by_status["503"] > 0  # Redis cut after the first claim
    assert by_status["connection_error"] + by_status["timeout"] > 0  # cut answers, restart


def test_outside_the_windows_every_healthy_check_passes(faulted: SoakOutcome) -> None:
    failed = {c.name: c.examples for c in faulted.results.checks.values() if not c.passed}
    extra = {name: failed[name] for name in set(failed) - FINDINGS}
    assert not extra, extra


def test_the_continuity_promise_fails_on_v5_0_with_its_reason(faulted: SoakOutcome) -> None:
    continuity = faulted.results.checks["redis_outage_continuity"]
    assert continuity.violations > 0
    assert all("503" in ex["got"] for ex in continuity.examples)
    from harness.report import build_report

    report = build_report(faulted)
    [check] = [c for c in report["checks"] if c["name"] == "redis_outage_continuity"]
    assert "first good PING" in check["note"] and not report["passed"]


def test_a_database_outage_strands_devices(faulted: SoakOutcome) -> None:
    stranded = faulted.results.checks["db_outage_strands_devices"]
    assert stranded.violations > 0 and stranded.evaluated + stranded.violations > 0
    assert all(ex["got"].startswith("404") for ex in stranded.examples)


def test_the_redis_outage_was_measured_as_a_reconnect_storm(faulted: SoakOutcome) -> None:
    outages = faulted.results.outages
    # The fleet's view: devices still resending after cut answers may run into the Redis
    # outage, so the outage it saw may start earlier; it covers the Redis window either way.
    redis = [
        o
        for o in outages
        if o["started_after_s"] <= 3.5 and o["started_after_s"] + o["duration_s"] >= 4.5
    ]
    assert redis, outages
    assert redis[0]["fresh_attempts"] > 0 and redis[0]["devices_gave_up"] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("redis:down@1s", "expected TARGET:MODE@START+DURATION"),
        ("disk:down@1s+1s", "unknown target 'disk'"),
        ("redis:restart@1s+1s", "restart is for the server"),
        ("redis:explode@1s+1s", "is not a mode"),
        ("redis:down@1s+0s", "longer than 0 s"),
        ("redis:down@nan+1s", "nan"),
    ],
)
def test_a_bad_fault_is_one_line(text: str, message: str) -> None:
    with pytest.raises(HarnessInputError, match=re.escape(message)):
        parse_fault(text)


def test_overlapping_windows_on_one_target_are_refused() -> None:
    with pytest.raises(HarnessInputError, match="overlap"):
        check_windows((parse_fault("redis:down@1s+5s"), parse_fault("redis:drop@3s+1s")))


def test_a_fleet_file_declares_its_faults() -> None:
    fleet = parse_fleet(
        '[fleet]\nname = "f"\n\n[[cohorts]]\nname = "a"\ncount = 10\n\n'
        '[[faults]]\ntarget = "redis"\nmode = "down"\nat = "2s"\nfor = 3\n'
    )
    assert [w.text for w in fleet.faults] == ["redis:reset@2s+3s"]
    with pytest.raises(HarnessInputError, match=r"faults\[0\].*missing key 'for'"):
        parse_fleet('[fleet]\nname = "f"\n\n[[cohorts]]\nname = "a"\ncount = 1\n\n'
                    '[[faults]]\ntarget = "redis"\nmode = "down"\nat = "2s"\n')  # fmt: skip


def test_v5_0_defaults_through_touching_windows_stay_on_their_rows() -> None:
    """Idempotency off (the production default): a concurrent pair in a PostgreSQL outage is
    a 404 and a 409 (the nonce step refuses the second), and a window that starts when the
    last one ends on the same target is really applied, not undone by that end."""
    for name, package in (("redis-server", "redis-server"), ("initdb", "postgresql")):
        require_binary(name, package)
    faults = ("postgres:down@1s+2s", "redis:delay:20ms@3s+1s", "redis:down@4s+1s")
    outcome = run_soak_sync(
        SoakOptions(
            fleet=ROOT / "fleets" / "soak.toml",
            duration=6.0,
            concurrency=16,
            faults=tuple(parse_fault(f) for f in faults),
        )
    )
    windows = outcome.info["fault_windows"]
    assert [w["text"] for w in windows] == [parse_fault(f).text for f in faults]
    for w in windows:
        assert w["claims"] > 0 and w["off_row"] == 0, w
    pairs = outcome.results.by_scenario
    assert any(label == "concurrent_duplicate" for label, _ in pairs)
    redis_down = [w for w in windows if w["mode"] == "reset" and w["target"] == "redis"]
    assert redis_down and outcome.results.by_status["503"] > 0  # the second window happened
