"""Soak runs against the real reference server (embedded, or `harness serve` in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.flags import Flags
from harness.fleet import load_fleet, parse_fleet
from harness.report import build_report
from harness.results import CHECK_NAMES, RunResults
from harness.run import RunObserver, SoakJob, SoakOptions, run_job, run_soak, run_soak_sync
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from tests.support import HARNESS, ROOT, free_port, require_binary

SOAK = ROOT / "fleets" / "soak.toml"


def _accounted(results: RunResults, planned: int | None = None) -> None:
    """Every claim sent is counted exactly once, per status and per scenario."""
    assert sum(results.by_status.values()) == results.sent
    assert sum(results.by_scenario.values()) == results.sent
    assert results.latency.count == results.sent
    if planned is not None:
        assert results.sent == planned


def _failed(results: RunResults) -> set[str]:
    return {name for name, tally in results.checks.items() if not tally.passed}


def test_default_soak_passes_and_exercises_every_check(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    job = SoakJob(SoakOptions(claims=1200), report=str(report_path), quiet=True)
    result = job_result = run_job(job)
    assert result.exit_code == 0, json.dumps(result.report["checks"], indent=1)
    assert job_result.outcome is not None
    results = job_result.outcome.results
    _accounted(results, 1200)
    for name in CHECK_NAMES:
        assert results.checks[name].evaluated > 0, f"{name} never evaluated"
    statuses = {k for k in results.by_status}
    assert {"200", "401", "403", "404", "409"} <= statuses
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    assert report["claims"]["sent"] == 1200
    assert sum(report["claims"]["by_status"].values()) == 1200
    assert set(report["latency_seconds"]) >= {"p50", "p95", "p99", "max"}
    assert [c["name"] for c in report["checks"]] == list(CHECK_NAMES)
    assert report["token_checks"]["signature_sampling_rate"] == 1.0
    assert report["flags"]["DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE"] is True
    # The report reloads into exact results (shard merging relies on it).
    assert RunResults.from_dict(report).by_status == results.by_status


SMALL = load_fleet(SOAK).scaled(300)


@pytest.mark.parametrize("flags", Flags.all_combinations(), ids=lambda f: f.key())
def test_every_flag_combination_declared_correctly(flags: Flags) -> None:
    """Only the v5 race may fail, and only without the atomic switch; with it, all pass."""
    v5 = run_soak_sync(SoakOptions(fleet=SMALL, claims=250, flags=flags, keepalive=True))
    _accounted(v5.results, 250)
    allowed = {"concurrent_retry"} if flags.enable_idempotency else set()
    assert _failed(v5.results) <= allowed, v5.results.to_dict()["checks"]
    fixed = run_soak_sync(
        SoakOptions(fleet=SMALL, claims=250, flags=flags, keepalive=True, atomic_idempotency=True)
    )
    _accounted(fixed.results, 250)
    assert _failed(fixed.results) == set(), fixed.results.to_dict()["checks"]
    assert fixed.results.checks["concurrent_retry"].evaluated > 0


RACY = parse_fleet(
    """
[fleet]
name = "racy"
seed = 3
[[cohorts]]
name = "doubles"
count = 50
id_style = "mac-lower"
concurrent_duplicates = 0.9
""",
    "racy",
)


@pytest.mark.parametrize("keepalive", [False, True], ids=["fresh", "keepalive"])
def test_v5_race_is_reported_and_the_atomic_switch_fixes_it(keepalive: bool) -> None:
    flags = Flags(enable_idempotency=True)
    v5 = run_soak_sync(SoakOptions(fleet=RACY, claims=200, flags=flags, keepalive=keepalive))
    race = v5.results.checks["concurrent_retry"]
    assert race.violations > 0, "the v5 server's race went unnoticed"
    assert "different tokens" in race.examples[0]["got"]
    assert race.examples[0]["device_id"].endswith("***")  # masked
    assert _failed(v5.results) == {"concurrent_retry"}
    fixed = run_soak_sync(
        SoakOptions(
            fleet=RACY, claims=200, flags=flags, keepalive=keepalive, atomic_idempotency=True
        )
    )
    assert _failed(fixed.results) == set()


def test_rate_limited_is_an_outcome_not_a_violation() -> None:
    fleet = load_fleet(SOAK).scaled(20)
    config = ServerConfig(seed=fleet.to_seed(), rate_limit=5.0)

    async def main() -> RunResults:
        async with EmbeddedServer(config) as server:
            opts = SoakOptions(
                target=server.url,
                fleet=fleet,
                claims=150,
                concurrency=20,
                jwt_secret=server.jwt_secret,
                keepalive=True,
            )
            return (await run_soak(opts)).results

    results = asyncio.run(main())
    _accounted(results, None)
    assert results.by_status["429"] > 0
    assert _failed(results) == set()


def test_every_claim_is_counted_when_nothing_answers() -> None:
    port = free_port()
    options = SoakOptions(target=f"http://127.0.0.1:{port}", fleet=SMALL, claims=40, timeout=2.0,
                          firmware_time_scale=0.0)  # fmt: skip
    outcome = run_soak_sync(options)
    _accounted(outcome.results)
    # Every device resent and tried again as its habits say, then gave up: each accounted.
    assert outcome.results.extra["firmware_gave_up"] > 0
    assert outcome.results.by_status == {"connection_error": outcome.results.sent}
    report = build_report(outcome)
    assert report["passed"] is False  # nothing could be judged: not a pass
    assert "no claim got an HTTP answer" in report["verdict_note"]


def test_cli_unreachable_target_is_one_line_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [*HARNESS, "soak", "--target", url, "--claims", "10", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot reach" in proc.stderr


def test_open_model_spreads_claims_over_the_schedule() -> None:
    out = run_soak_sync(SoakOptions(fleet=SMALL, claims=120, rate=200.0, keepalive=True))
    _accounted(out.results, 120)
    # 120 sends due at i/200 s: the last is due 0.6 s in, however fast the server is.
    assert out.results.duration_s >= 0.55
    # A send may start up to 0.5 ms before its slot (the runner does not sleep for less),
    # so only that much (plus HDR's 0.1% rounding) may separate the two maxima.
    assert out.results.latency_scheduled.max >= out.results.latency.max * 0.99 - 0.0005
    assert _failed(out.results) == set()


def _serve(seed: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = [*HARNESS, "serve", "--port", str(port), "--seed", str(seed), "--log-file", "none"]
    for flag in flags:
        cmd += ["--flag", flag]
    env = {k: v for k, v in os.environ.items() if k not in Flags.ENV_NAMES}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail("harness serve did not start")
    return proc, f"http://127.0.0.1:{port}"


def test_cli_against_serve_with_idempotency_off_fails_declared_idempotency(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(load_fleet(SOAK).seed_export()))
    proc, url = _serve(seed)  # production default: ENABLE_IDEMPOTENCY=false
    try:
        common = [*HARNESS, "soak", "--target", url, "--claims", "600", "--no-progress"]
        declared_on = subprocess.run(
            [
                *common,
                "--flag",
                "ENABLE_IDEMPOTENCY=true",
                "--report",
                str(tmp_path / "on.json"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert declared_on.returncode == 1, declared_on.stdout + declared_on.stderr
        report = json.loads((tmp_path / "on.json").read_text())
        failed = {c["name"] for c in report["checks"] if not c["passed"]}
        assert "idempotent_retry" in failed
        example = next(c for c in report["checks"] if c["name"] == "idempotent_retry")["examples"][
            0
        ]
        assert example["got"] == "status 409" and "409" not in example["expected"]
        assert "FAILED" in declared_on.stdout
        # Declared as it really runs, the same fleet passes.
        declared_right = subprocess.run(
            common, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert declared_right.returncode == 0, declared_right.stdout + declared_right.stderr
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--claims", "0"], "--claims"),
        (["--rate", "5", "--concurrency", "3"], "--rate"),
        (["--flag", "ENABLE_IDEMPOTENCY=maybe"], "ENABLE_IDEMPOTENCY"),
        (["--fleet", "nope.toml"], "nope.toml"),
        (["--shard", "4/4"], "--shard"),
        (["--threshold", "p95<<fast"], "p95<<fast"),
        (["--claims", "5", "--duration", "5"], "--duration"),
        (["--flag", "NO_SUCH_FLAG=true"], "NO_SUCH_FLAG"),
        (["--fleet", "README.md"], "README.md"),
        (["--workers", "0"], "--workers"),
        (["--run-id", "has space"], "--run-id"),
        (["--threshold", "p95>0.5x"], "p95>0.5x"),
    ],
)
def test_cli_bad_usage_is_one_line_exit_2(args: list[str], needle: str) -> None:
    proc = subprocess.run(
        [*HARNESS, "soak", "--no-progress", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_shards_add_up_to_the_whole_run() -> None:
    """Three shards of one plan, against one server, count exactly what one process counts."""
    flags = Flags(enable_auto_register=True)

    async def main() -> tuple[RunResults, RunResults]:
        config = ServerConfig(flags=flags, seed=SMALL.to_seed())
        async with EmbeddedServer(config) as server:
            base = SoakOptions(
                target=server.url,
                fleet=SMALL,
                claims=300,
                flags=flags,
                keepalive=True,
                jwt_secret=server.jwt_secret,
            )
            whole = (await run_soak(base)).results
            merged = RunResults()
            for k in range(3):
                part = replace(base, shard=(k, 3))
                merged.merge((await run_soak(part)).results)
            return whole, merged

    whole, merged = asyncio.run(main())
    assert merged.sent == whole.sent == 300
    assert merged.by_scenario == whole.by_scenario
    assert merged.by_status == whole.by_status
    for name in CHECK_NAMES:
        assert merged.checks[name].evaluated == whole.checks[name].evaluated, name
    assert _failed(whole) == _failed(merged) == set()


def test_workers_merge_into_one_report(tmp_path: Path) -> None:
    report = tmp_path / "workers.json"
    job = SoakJob(SoakOptions(fleet=SMALL, claims=300), workers=2, report=str(report), quiet=True)
    result = run_job(job)
    assert result.exit_code == 0, result.report["checks"]
    data = json.loads(report.read_text())
    assert data["claims"]["sent"] == 300
    assert sum(data["claims"]["by_status"].values()) == 300
    assert data["run"]["workers"] == 2
    assert data["token_checks"]["tokens_checked"] == data["claims"]["by_status"]["200"]


def test_c_signer_signs_a_soak() -> None:
    """The firmware's C signer behind the Signer seam: the server accepts what it signs."""
    from harness.signer import CSigner

    require_binary("gcc")
    require_binary("make")
    signer = CSigner.build()
    out = run_soak_sync(SoakOptions(fleet=SMALL, claims=150, keepalive=True, signer=signer))
    _accounted(out.results, 150)
    assert _failed(out.results) == set()
    assert out.results.by_status["200"] > 0


def test_duration_run_with_progress_lines() -> None:
    import io

    stream = io.StringIO()
    out = run_soak_sync(
        SoakOptions(
            fleet=SMALL,
            duration=1.5,
            rate=100.0,
            keepalive=True,
            progress=True,
            progress_stream=stream,
        )
    )
    _accounted(out.results)
    assert 0 < out.results.sent <= 152  # 100/s for 1.5 s, nothing scheduled after the end
    assert _failed(out.results) == set()
    lines = stream.getvalue().splitlines()
    assert lines and "sent=" in lines[0] and "violations=0" in lines[0]


def test_cli_workers_progress_adds_up_against_serve(tmp_path: Path) -> None:
    """--workers 2 --progress: combined progress lines while running, a report that adds up."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(load_fleet(SOAK).seed_export()))
    proc, url = _serve(seed)
    report = tmp_path / "workers.json"
    # --rate spreads the 3,000 claims over 2 s, so progress has time to show.
    args = ["--claims", "3000", "--rate", "1500", "--keepalive", "--workers", "2", "--progress"]
    args += ["--run-id", "ci-42", "--report", str(report)]
    try:
        run = subprocess.run(
            [*HARNESS, "soak", "--target", url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.terminate()
        proc.wait(10)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == f"soak run ci-42: fleet soak, target {url}, workers 2 (--workers)"
    progress = [ln for ln in lines[1:] if ln.startswith("[")]
    assert progress, run.stderr
    sent = [int(ln.split("sent=")[1].split()[0]) for ln in progress]
    assert sent == sorted(sent) and 0 < sent[-1] <= 3000
    assert all("/s " in ln and "violations=0" in ln for ln in progress)
    # (a line may come before the spawned workers have written anything: sent=0)
    assert all("200=" in ln for ln, n in zip(progress, sent, strict=True) if n), run.stderr
    data = json.loads(report.read_text())
    assert data["run_id"] == "ci-42" and data["run"]["workers"] == 2
    assert data["claims"]["sent"] == 3000
    assert sum(data["claims"]["by_status"].values()) == data["claims"]["sent"]


def test_default_workers_follow_the_target() -> None:
    from harness.cli.soak import _workers
    from harness.workers import default_workers

    assert _workers(None, "http://server:8000", None) == (default_workers(), "cores")
    assert _workers(None, None, None) == (1, "embedded server")
    assert _workers(None, "http://server:8000", (1, 4)) == (1, "shard")
    assert _workers(3, None, None) == (3, "--workers")


def test_worker_counts_files_sum_into_one_progress_line(tmp_path: Path) -> None:
    """What the parent prints from the workers' counts files (missing ones skipped)."""
    import io

    from harness.run.progress import WorkerProgress as _WorkerProgress
    from harness.run.progress import progress_line, write_counts

    a, b = RunResults(), RunResults()
    for res, statuses in ((a, ["200", "200", "409"]), (b, ["200", "401"])):
        for status in statuses:
            res.record_claim("first_claim", status, 0.01)
    b.checks["first_claim"].record(False)
    b.late_starts = 2
    write_counts(str(tmp_path / "progress-0.json"), a)
    write_counts(str(tmp_path / "progress-1.json"), b)
    printer = _WorkerProgress(str(tmp_path), 3, io.StringIO())  # worker 2 not started yet
    sent, by_status, violations, late = printer.totals()
    assert (sent, dict(by_status), violations, late) == (5, {"200": 3, "409": 1, "401": 1}, 1, 2)
    line = progress_line(2.0, sent, 2.5, by_status, violations, late)
    assert line == "[   2.0s] sent=5 2/s 200=3 401=1 409=1 violations=1 late=2"


def test_a_bug_in_the_batched_token_check_stops_the_run_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Token checks run in a loop callback, not in an episode: a bug there must still
    end the run with the error instead of being logged by the loop and lost."""
    from harness import token_check as tokens

    def broken(*_args: object, **_kwargs: object) -> str | None:
        raise RuntimeError("bug in the token check")

    monkeypatch.setattr(tokens.FastTokenCheck, "problems", broken)
    with pytest.raises(RuntimeError, match="bug in the token check"):
        run_soak_sync(SoakOptions(claims=100_000, keepalive=True))


def test_what_only_pyjwt_finds_is_a_masked_token_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every ``token_verify_every``-th token the fast check passed goes to pyjwt's
    check_token; a problem found only there is a token_claims violation naming the
    claim, never its value (a device ID)."""
    from harness import judge as runner
    from harness.protocol.tokens import check_token

    seen: list[str] = []

    def pickier(token: str, device_id: str, child_id: str, *args: object) -> object:
        result = check_token(token, device_id, child_id, *args)  # type: ignore[arg-type]
        assert result.ok  # the fast check and pyjwt agree on the reference server's tokens
        seen.append(device_id)
        result.problems.append(f"aud={device_id!r}, expected 'teddy-api'")
        return result

    monkeypatch.setattr(runner, "check_token", pickier)
    out = run_soak_sync(SoakOptions(fleet=SMALL, claims=300, keepalive=True, token_verify_every=3))
    tally = out.results.checks["token_claims"]
    assert out.tokens_checked == out.results.by_status["200"] > 30
    assert out.tokens_cross_checked == len(seen) == out.tokens_checked // 3
    assert tally.violations == len(seen)
    assert tally.evaluated == out.tokens_checked
    assert tally.examples and all(e["got"] == "pyjwt check_token: aud" for e in tally.examples)
    assert not any(dev in json.dumps(tally.examples) for dev in seen)


def test_a_bug_judging_a_callback_first_claim_stops_the_run_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """First claims of a closed-model run are judged inside the connection's callback,
    not in a task: a bug there must end the run with the error, not be logged and lost."""
    from harness import judge as runner

    judged = [0]

    def broken(*_args: object, **_kwargs: object) -> str | None:
        judged[0] += 1
        raise RuntimeError("bug in the oracle")

    fleet = parse_fleet('[fleet]\nname = "firsts"\n[[cohorts]]\nname = "a"\ncount = 50\n', "firsts")
    monkeypatch.setattr(runner, "judge_send", broken)
    with pytest.raises(RuntimeError, match="bug in the oracle"):
        run_soak_sync(SoakOptions(fleet=fleet, claims=100_000, keepalive=True, concurrency=8))
    assert 0 < judged[0] < 1_000  # the lanes stopped at the first bug, not after the plan


def test_a_cancelled_run_starts_no_claims_after_it_ends() -> None:
    """Cancelling a closed-model run (Ctrl-C, a wait_for) fails the answers in flight;
    their callbacks must not go on starting the plan's next episodes."""

    class Count(RunObserver):
        sent = 0

        def on_claim(self, *_args: object) -> None:
            Count.sent += 1

    async def main() -> tuple[int, int]:
        opts = SoakOptions(
            fleet=SMALL, duration=60, keepalive=True, concurrency=20, observers=[Count()]
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_soak(opts), timeout=1.5)
        at_cancel = Count.sent
        await asyncio.sleep(0.5)
        return at_cancel, Count.sent

    at_cancel, later = asyncio.run(main())
    assert at_cancel > 0
    assert later - at_cancel <= 20  # at most the answers that were in flight


def test_unwritable_output_is_exit_2_before_the_run(tmp_path: Path) -> None:
    """A --junit the run could not write is refused up front: no run whose results are lost
    (the report beside it is never written, because the run never starts)."""
    report = tmp_path / "report.json"
    junit = tmp_path / "missing-dir" / "junit.xml"
    proc = subprocess.run(
        [*HARNESS, "soak", "--claims", "50", "--report", str(report), "--junit", str(junit)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--junit" in proc.stderr
    assert "missing-dir is not a directory" in proc.stderr
    assert not report.exists()


def test_bad_input_leaves_no_metrics_server_running(tmp_path: Path) -> None:
    """Outputs and --target are checked before /metrics starts serving: a run refused
    for bad input leaves its port free (a Python caller's process goes on)."""
    from harness.errors import HarnessInputError

    for bad in (
        {"report": str(tmp_path / "missing-dir" / "report.json")},
        {"textfile": str(tmp_path / "missing-dir")},
        {"target": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
    ):
        port = free_port()
        target = bad.pop("target", None)
        job = SoakJob(SoakOptions(claims=10, target=target), metrics_port=port, quiet=True, **bad)
        with pytest.raises(HarnessInputError):
            run_job(job)
        with socket.socket() as s:  # free again: no server was left listening
            s.bind(("0.0.0.0", port))


def test_a_bug_outside_a_scenario_stops_the_run_loudly_instead_of_hanging_it() -> None:
    """A signer failing on a live-path fresh attempt, or an observer failing on an episode's
    outcome, runs in a loop callback, not in a task: the run must end with the error."""
    from harness.signer import PythonSigner

    class FailsOnFreshAttempts(PythonSigner):
        def sign(self, *args: object, **kwargs: object) -> str:
            if sys._getframe(1).f_code.co_name == "_sign":  # a fresh attempt's, not a batch's
                raise RuntimeError("signer broke")
            return super().sign(*args, **kwargs)  # type: ignore[arg-type]

    class FailsOnEpisodes(RunObserver):
        def on_episode(self, dev: object, scenario: str, outcome: str) -> None:
            raise RuntimeError("observer broke")

    runs = [
        SoakOptions(fleet="fleets/firmware.toml", claims=300, signer=FailsOnFreshAttempts(),
                    firmware_time_scale=0.0),
        SoakOptions(claims=200, observers=[FailsOnEpisodes()]),
    ]  # fmt: skip
    for options, says in zip(runs, ("signer broke", "observer broke"), strict=True):
        with pytest.raises(RuntimeError, match=says):
            asyncio.run(asyncio.wait_for(run_soak(options), 30))  # a hang is a TimeoutError
