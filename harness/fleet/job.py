"""A whole ``harness soak`` job: run (in workers or one process), judge, export, exit code.

The CLI only parses options into ``SoakJob`` and calls ``run_job``; tests call
``run_job`` directly. Exporters (JUnit, Prometheus, thresholds) come from
their own modules and are imported only when asked for.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessInputError
from harness.fleet.model import Fleet
from harness.fleet.runner import (
    DEFAULT_CONCURRENCY,
    SoakOptions,
    SoakOutcome,
    embedded_config,
    prepare_fleet,
    progress_line,
    run_soak_sync,
    server_profile,
    validate_options,
)
from harness.preflight import Preflight, preflight
from harness.report import build_report, check_outputs, summary_table, write_report
from harness.shard import Shard, shard_indices

EXIT_OK, EXIT_FAILED = 0, 1
# What --run-id may hold: it becomes a Pushgateway grouping-key value and a file-name part.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(slots=True)
class SoakJob:
    """One job: the run's options plus what to do with the result."""

    options: SoakOptions
    workers: int = 1
    # Why that many workers ("--workers", "cores", "embedded server", "shard"): the header says.
    workers_source: str = ""
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
    if options.run_id is not None and not RUN_ID.fullmatch(options.run_id):
        allowed = "letters, digits, '.', '_', ':' or '-' (1..128 characters)"
        raise HarnessInputError("--run-id", f"use {allowed}, got {options.run_id!r}")
    options.run_id = options.run_id or uuid.uuid4().hex[:12]
    # Load the fleet once, up front: a bad file is exit 2 before anything starts.
    options.fleet = fleet = prepare_fleet(options)
    options.devices = options.seed = None  # already applied to the loaded fleet
    server_profile(options, fleet)  # a bad profile declaration: exit 2 before anything runs
    _cap_concurrency(options, fleet, job.quiet)
    parsed = []
    if job.thresholds:
        try:
            from harness.thresholds import evaluate, parse_threshold
        except ImportError:
            raise _unavailable("--threshold", "harness.thresholds") from None
        parsed = [parse_threshold(expr) for expr in job.thresholds]
    # Bad input is found before the metrics server starts, so it leaves nothing running.
    check_outputs(job.report, job.junit, job.textfile, job.pushgateway)
    checked = None
    if options.target is not None:
        checked = _preflight(options, fleet)  # no answer at all: exit 2, nothing started
    metrics = None
    stop_metrics = None
    if job.metrics_port is not None or job.pushgateway or job.textfile:
        try:
            from harness.metrics import SoakMetrics, serve_metrics
        except ImportError:
            raise _unavailable("--metrics-port", "harness.metrics") from None
        metrics = SoakMetrics(run_id=options.run_id, fleet=fleet.name)
        options.observers.append(metrics)
        if job.metrics_port is not None:
            stop_metrics = serve_metrics(metrics.registry, job.metrics_port)
    # Cross-check the server's own v5 counters whenever it serves them (two GETs).
    options.server_counters = True
    if not job.quiet:
        print(_header(job, fleet.name), file=sys.stderr, flush=True)
    try:
        if job.workers > 1:
            outcome = _run_workers(options, job.workers, metrics)
        else:
            outcome = run_soak_sync(options)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    if checked is not None:
        outcome.info["preflight"] = checked.to_dict()
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

        if job.pushgateway:
            label = Shard(*options.shard).label if options.shard else None
            push_to_gateway(job.pushgateway, metrics.registry, options.run_id, label)
        if job.textfile:
            write_textfile(job.textfile, metrics.registry, options.run_id)
    if not job.quiet:
        print(summary_table(report), file=job.out or sys.stdout)
    return JobResult(report, EXIT_OK if report["passed"] else EXIT_FAILED, outcome)


def _cap_concurrency(options: SoakOptions, fleet: Fleet, quiet: bool) -> None:
    """A closed model with more lanes than devices would put one device in flight twice,
    which no real device does: cap it, and say so in one line."""
    if options.rate is not None:
        return
    devices = len(fleet)
    if options.shard is not None:
        devices = len(shard_indices(devices, Shard(*options.shard)))
    wanted = options.concurrency or DEFAULT_CONCURRENCY
    if wanted > devices:
        options.concurrency = devices
        if not quiet:
            print(
                f"soak: --concurrency {wanted:,} capped at {devices:,}: the fleet has "
                f"{devices:,} devices and a device has one claim in flight",
                file=sys.stderr,
                flush=True,
            )


def _header(job: SoakJob, fleet: str) -> str:
    """The line a run starts with: what runs where, and how many workers and why."""
    o = job.options
    why = f" ({job.workers_source})" if job.workers_source else ""
    return (
        f"soak run {o.run_id}: fleet {fleet}, target {o.target or 'embedded'}, "
        f"workers {job.workers}{why}"
    )


def _preflight(options: SoakOptions, fleet: Fleet) -> Preflight:
    """The target reached and a few of the fleet's devices claimed before the run
    (harness.preflight)."""
    import asyncio

    assert options.target is not None
    return asyncio.run(preflight(options.target, fleet, options.claim_path, options.timeout))


# --- --workers: N processes, one shard each, merged exactly ------------------------------


def _worker_run(options: SoakOptions, extras_dir: str, index: int, count: int) -> dict[str, Any]:
    """One worker process: shard ``index/count`` of the run; extras go to a side file.

    With progress on, the worker writes its running counts to ``progress-<index>.json``
    every ``PROGRESS_FILE_S`` for the parent's combined progress line.
    """
    counts = str(Path(extras_dir, f"progress-{index}.json")) if options.progress else None
    opts = replace(
        options, shard=(index, count), observers=[], progress=False, progress_file=counts
    )
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
    from harness.server.embedded import EmbeddedServer

    fleet = prepare_fleet(options)
    with EmbeddedServer(embedded_config(options, fleet), mode="process") as server:
        shared = replace(options, target=server.url, jwt_secret=server.jwt_secret, fleet=fleet)
        outcome = _merge_workers(shared, workers, run_workers, metrics)
    outcome.info["target"] = "embedded"
    return outcome


def _merge_workers(
    options: SoakOptions, workers: int, run_workers: Any, metrics: Any
) -> SoakOutcome:
    observers = options.observers
    with tempfile.TemporaryDirectory(prefix="harness-workers-") as tmp:
        # progress stays on in the copy: it tells each worker to write its counts file.
        plain = replace(options, observers=[], progress_stream=None, server_counters=False)
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
        printer = None
        if options.progress:
            printer = _WorkerProgress(tmp, workers, options.progress_stream or sys.stderr)
            printer.start()
        try:
            results = run_workers(workers, functools.partial(_worker_run, plain, tmp))
        finally:
            if printer is not None:
                printer.stop()
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


class _WorkerProgress(threading.Thread):
    """Once a second, the workers' counts files summed into one progress line.

    Workers write their running counts every ``PROGRESS_FILE_S`` (atomically, by
    rename), so this thread only reads a handful of small files per second; no
    per-claim cost anywhere.
    """

    def __init__(self, directory: str, workers: int, stream: IO[str]) -> None:
        super().__init__(name="harness-worker-progress", daemon=True)
        self.files = [Path(directory, f"progress-{i}.json") for i in range(workers)]
        self.stream = stream
        self.done = threading.Event()

    def totals(self) -> tuple[int, Counter[str], int, int]:
        """Summed (sent, by_status, violations, late starts) over the workers seen so far."""
        sent = violations = late = 0
        by_status: Counter[str] = Counter()
        for path in self.files:
            try:
                counts = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # not written yet
                continue
            sent += counts["sent"]
            by_status.update(counts["by_status"])
            violations += counts["violations"]
            late += counts["late"]
        return sent, by_status, violations, late

    def run(self) -> None:
        start = last_t = time.monotonic()
        last_sent = 0
        while not self.done.wait(1.0):
            now = time.monotonic()
            sent, by_status, violations, late = self.totals()
            rate = (sent - last_sent) / (now - last_t) if now > last_t else 0.0
            last_sent, last_t = sent, now
            self.stream.write(progress_line(now - start, sent, rate, by_status, violations, late))
            self.stream.write("\n")
            self.stream.flush()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
