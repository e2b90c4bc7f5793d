"""A whole ``harness soak`` job: run (in workers or one process), judge, export, exit code.

The CLI only parses options into ``SoakJob`` and calls ``run_job``; tests call
``run_job`` directly. Exporters (JUnit, Prometheus, thresholds) come from
their own modules and are imported only when asked for.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessInputError
from harness.fleet.runner import (
    DEFAULT_CONCURRENCY,
    SoakOptions,
    SoakOutcome,
    prepare_fleet,
    run_soak_sync,
    validate_options,
)
from harness.report import build_report, summary_table, write_report

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(slots=True)
class SoakJob:
    """One job: the run's options plus what to do with the result."""

    options: SoakOptions
    workers: int = 1
    thresholds: list[str] = field(default_factory=list)
    report: str | None = None
    junit: str | None = None
    metrics_port: int | None = None
    pushgateway: str | None = None
    textfile: str | None = None
    out: IO[str] | None = None  # the summary table (stdout when None)
    quiet: bool = False


@dataclass(slots=True)
class JobResult:
    report: dict[str, Any]
    exit_code: int
    outcome: SoakOutcome | None = None


def _unavailable(option: str, module: str) -> HarnessInputError:
    return HarnessInputError(option, f"not available yet ({module} is missing)")


def run_job(job: SoakJob) -> JobResult:
    """Run the job and write everything it asks for; returns the report and the exit code."""
    options = job.options
    validate_options(options)
    options.run_id = options.run_id or uuid.uuid4().hex[:12]
    parsed = []
    if job.thresholds:
        try:
            from harness.thresholds import evaluate, parse_threshold
        except ImportError:
            raise _unavailable("--threshold", "harness.thresholds") from None
        parsed = [parse_threshold(expr) for expr in job.thresholds]
    metrics = None
    stop_metrics = None
    if job.metrics_port is not None or job.pushgateway or job.textfile:
        try:
            from harness.metrics import SoakMetrics, serve_metrics
        except ImportError:
            raise _unavailable("--metrics-port", "harness.metrics") from None
        fleet_name = prepare_fleet(options).name
        metrics = SoakMetrics(run_id=options.run_id, fleet=fleet_name)
        options.observers.append(metrics)
        if job.metrics_port is not None:
            stop_metrics = serve_metrics(metrics.registry, job.metrics_port)
    if job.textfile and not Path(job.textfile).is_dir():
        raise HarnessInputError("--textfile", f"{job.textfile} is not a directory")
    if options.target is not None:
        _ensure_reachable(options.target, options.timeout)
    # Cross-check the server's own v5 counters whenever it serves them (two GETs).
    options.server_counters = True
    try:
        if job.workers > 1:
            outcome = _run_workers(options, job.workers, metrics)
        else:
            outcome = run_soak_sync(options)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    thresholds = evaluate(parsed, outcome.results) if parsed else []
    server_counters = None
    if outcome.server_before and outcome.server_after:
        from harness.metrics import compare_server_deltas, server_counters_section

        rows = compare_server_deltas(
            outcome.server_before, outcome.server_after, outcome.results, outcome.extra
        )
        server_counters = server_counters_section(rows)
    report = build_report(outcome, thresholds, server_counters)
    if job.report:
        write_report(report, job.report)
    if job.junit:
        try:
            from harness.junit import write_junit
        except ImportError:
            raise _unavailable("--junit", "harness.junit") from None
        write_junit(report, job.junit)
    if metrics is not None:
        from harness.metrics import push_to_gateway, write_textfile

        shard = report["run"].get("shard")
        if job.pushgateway:
            label = shard.replace("/", "-of-") if shard else None
            push_to_gateway(job.pushgateway, metrics.registry, options.run_id, label)
        if job.textfile:
            write_textfile(job.textfile, metrics.registry, options.run_id)
    if not job.quiet:
        print(summary_table(report), file=job.out or sys.stdout)
    return JobResult(report, EXIT_OK if report["passed"] else EXIT_FAILED, outcome)


def _ensure_reachable(target: str, timeout: float) -> None:
    """No HTTP answer at all from a --target is bad configuration (exit 2), not a failed run."""
    import asyncio

    from harness.transport import TransportError, make_transport

    async def probe() -> None:
        transport = make_transport(target, mode="fresh", timeout=timeout, max_connections=1)
        try:
            await transport.get("/health")
        except TransportError as exc:
            raise HarnessInputError("--target", f"cannot reach {target}: {exc}") from None
        finally:
            await transport.aclose()

    asyncio.run(probe())


# --- --workers: N processes, one shard each, merged exactly ------------------------------


def _worker_run(options: SoakOptions, extras_dir: str, index: int, count: int) -> dict[str, Any]:
    """One worker process: shard ``index/count`` of the run; extras go to a side file."""
    opts = replace(options, shard=(index, count), observers=[], progress=False)
    outcome = run_soak_sync(opts)
    side = {
        "extra": outcome.extra,
        "by_cohort": [[c, s, n] for (c, s), n in outcome.by_cohort.items()],
        "tokens_checked": outcome.tokens_checked,
        "signatures": outcome.token_signatures_verified,
        "cross_checked": outcome.tokens_cross_checked,
        "info": outcome.info,
    }
    Path(extras_dir, f"{index}.json").write_text(json.dumps(side), encoding="utf-8")
    return outcome.results.to_dict()


def _run_workers(options: SoakOptions, workers: int, metrics: Any) -> SoakOutcome:
    """Run ``workers`` shards in processes against one server and merge them."""
    try:
        from harness.workers import run_workers
    except ImportError:
        raise _unavailable("--workers", "harness.workers") from None
    if options.shard is not None:
        raise HarnessInputError("--workers", "use --workers or --shard, not both")
    if options.target is not None:
        return _merge_workers(options, workers, run_workers, metrics)
    from harness.server.config import ServerConfig
    from harness.server.embedded import EmbeddedServer

    fleet = prepare_fleet(options)
    config = ServerConfig(
        flags=options.flags,
        seed=fleet.to_seed(),
        atomic_idempotency=options.atomic_idempotency,
        auto_register_secret=options.auto_register_secret,
    )
    with EmbeddedServer(config, mode="process") as server:
        shared = replace(options, target=server.url, jwt_secret=server.jwt_secret, fleet=fleet)
        outcome = _merge_workers(shared, workers, run_workers, metrics)
    outcome.info["target"] = "embedded"
    return outcome


def _merge_workers(
    options: SoakOptions, workers: int, run_workers: Any, metrics: Any
) -> SoakOutcome:
    observers = options.observers
    with tempfile.TemporaryDirectory(prefix="harness-workers-") as tmp:
        plain = replace(options, observers=[], progress=False, server_counters=False)
        if options.rate is None:  # closed model: the devices in flight are shared out
            total = options.concurrency or DEFAULT_CONCURRENCY
            plain.concurrency = max(1, -(-total // workers))
        # (open model: every shard schedules on the fleet's one timeline, so --rate is total)
        if metrics is not None:
            metrics.on_start({"run_id": options.run_id, "fleet": None})
        before = after = {}
        if options.server_counters and options.target:
            from harness.metrics import scrape_server_counters

            before = scrape_server_counters(options.target)
        results = run_workers(workers, functools.partial(_worker_run, plain, tmp))
        if before:
            after = scrape_server_counters(options.target)
        extra: Counter[str] = Counter()
        by_cohort: Counter[tuple[str, str]] = Counter()
        tokens = signatures = cross = 0
        info: dict[str, Any] = {}
        for i in range(workers):
            side = json.loads(Path(tmp, f"{i}.json").read_text(encoding="utf-8"))
            extra.update(side["extra"])
            by_cohort.update({(c, s): n for c, s, n in side["by_cohort"]})
            tokens += side["tokens_checked"]
            signatures += side["signatures"]
            cross += side["cross_checked"]
            info = info or side["info"]
    info = {**info, "shard": None, "workers": workers, "devices": info.get("fleet_devices")}
    for obs in observers:
        obs.on_finish(results)
    outcome = SoakOutcome(
        results, info, dict(extra), by_cohort, signatures, tokens, before, after, cross
    )
    return outcome
