"""A whole ``harness soak`` job: run (in workers or one process), judge, export, exit code.

The CLI only parses options into ``SoakJob`` and calls ``run_job``; tests call
``run_job`` directly. The job never rewrites the options it is given: what it
settles (the loaded fleet, the run ID, the capped concurrency) goes into a copy.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessInputError
from harness.exporters import Exporters
from harness.fleet.model import Fleet
from harness.journal import ClaimJournal, journal_for
from harness.metrics import (
    SnapshotWriter,
    SoakMetrics,
    compare_server_deltas,
    scrape_server_counters,
    server_counters_section,
)
from harness.preflight import Preflight, preflight
from harness.report import build_report, check_writable
from harness.run.options import (
    DEFAULT_CONCURRENCY,
    SoakOptions,
    SoakOutcome,
    new_run_id,
    prepare_fleet,
    run_seed,
    server_profile,
    validate_options,
)
from harness.run.progress import WorkerProgress
from harness.run.runner import access_ttl, fault_windows, run_soak_sync
from harness.server.embedded import embedded_server
from harness.shard import Shard, shard_indices
from harness.thresholds import evaluate, parse_threshold
from harness.tls import client_context
from harness.workers import run_workers

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
    html: str | None = None

    def exporters(self) -> Exporters:
        return Exporters(self.report, self.junit, self.metrics_port, self.pushgateway,
                         self.textfile, self.out, self.quiet, self.html)  # fmt: skip


@dataclass(slots=True)
class JobResult:
    report: dict[str, Any]
    exit_code: int
    outcome: SoakOutcome | None = None


def run_job(job: SoakJob) -> JobResult:
    """Run the job and write everything it asks for; returns the report and the exit code."""
    given = job.options
    validate_options(given)
    if given.run_id is not None and not RUN_ID.fullmatch(given.run_id):
        allowed = "letters, digits, '.', '_', ':' or '-' (1..128 characters)"
        raise HarnessInputError("--run-id", f"use {allowed}, got {given.run_id!r}")
    fleet = prepare_fleet(given)  # loaded once, up front: a bad file is exit 2 before anything
    server_profile(given, fleet)  # a bad profile declaration: exit 2 before anything runs
    if fault_windows(given, fleet) and given.target is None and job.workers > 1:
        raise HarnessInputError(
            "--workers", "fault windows on the embedded server run in one process: --workers 1"
        )
    parsed = [parse_threshold(expr) for expr in job.thresholds]
    exporters = job.exporters()
    exporters.check()  # bad outputs are found before the metrics server starts
    if given.journal:
        check_writable("--journal", given.journal)
    checked = None
    if given.target is not None:
        checked = _preflight(given, fleet)  # no answer at all: exit 2, nothing started
    run_id = given.run_id or new_run_id()
    observers = list(given.observers)
    observers += exporters.start(run_id, fleet.name if fleet is not None else None)
    options = replace(given, fleet=fleet, devices=None, seed=None, run_id=run_id,
                      observers=observers, concurrency=_lanes(given, fleet, job.quiet),
                      server_counters=True)  # fmt: skip
    if options.journal:  # its start line now (at on_start), then the claims as they come
        options.observers.append(journal_for(options, fleet, job.workers, job.thresholds))
    if not job.quiet:
        print(_header(job, options, fleet), file=sys.stderr, flush=True)
    try:
        if job.workers > 1:
            outcome = _run_workers(options, job.workers, exporters.served)
        else:
            outcome = run_soak_sync(options)
    finally:
        exporters.stop()
    if checked is not None:
        outcome.info["preflight"] = checked.to_dict()
    thresholds = evaluate(parsed, outcome.results) if parsed else []
    server_counters = None
    if outcome.server_before and outcome.server_after:
        rows = compare_server_deltas(
            outcome.server_before, outcome.server_after, outcome.results, outcome.results.extra
        )
        server_counters = server_counters_section(rows)
    report = build_report(outcome, thresholds, server_counters, outcome.info.get("partial"))
    exporters.write(report, Shard(*options.shard).label if options.shard else None)
    return JobResult(report, EXIT_OK if report["passed"] else EXIT_FAILED, outcome)


def _lanes(options: SoakOptions, fleet: Fleet | None, quiet: bool) -> int | None:
    """A closed model with more lanes than devices would put one device in flight twice,
    which no real device does: cap it, and say so in one line."""
    if options.rate is not None or fleet is None:
        return options.concurrency
    devices = len(fleet)
    if options.shard is not None:
        devices = len(shard_indices(devices, Shard(*options.shard)))
    wanted = options.concurrency or DEFAULT_CONCURRENCY
    if wanted <= devices:
        return options.concurrency
    if not quiet:
        print(
            f"soak: --concurrency {wanted:,} capped at {devices:,}: the fleet has "
            f"{devices:,} devices and a device has one claim in flight",
            file=sys.stderr,
            flush=True,
        )
    return devices


def _header(job: SoakJob, o: SoakOptions, fleet: Fleet | None) -> str:
    """The line a run starts with: what runs where, and how many workers and why."""
    why = f" ({job.workers_source})" if job.workers_source else ""
    name = fleet.name if fleet is not None else "-"
    return (
        f"soak run {o.run_id}: fleet {name}, target {o.target or 'embedded'}, "
        f"workers {job.workers}{why}"
    )


def _preflight(options: SoakOptions, fleet: Fleet | None) -> Preflight:
    """The target reached and a few of the fleet's devices claimed before the run
    (harness.preflight)."""
    assert options.target is not None and fleet is not None
    tls = client_context(options.insecure, options.ca_bundle)
    return asyncio.run(
        preflight(options.target, fleet, options.claim_path, options.timeout, ssl_context=tls)
    )


# --- --workers: N processes, one shard each, merged exactly ------------------------------


def _worker_run(
    options: SoakOptions, info_dir: str, index: int, count: int, live: bool = False
) -> dict[str, Any]:
    """One worker process: shard ``index/count`` of the run; every figure is in its results.

    With progress on, the worker writes its running counts to ``progress-<index>.json``
    every ``PROGRESS_FILE_S`` for the parent's combined progress line; worker 0 also
    leaves its run description (``info``) for the report. With ``live`` (the parent
    serves /metrics) it counts in its own ``SoakMetrics`` and writes them to
    ``metrics-<index>.json`` every ``SNAPSHOT_FILE_S`` for the parent to sum.
    """
    metrics = SoakMetrics(run_id=options.run_id) if live else None
    counts = str(Path(info_dir, f"progress-{index}.json")) if options.progress else None
    observers = [metrics] if metrics is not None else []
    if options.journal:  # appends to the file the parent's journal started (O_APPEND)
        observers.append(ClaimJournal(options.journal, worker=index))
    opts = replace(
        options, shard=(index, count), observers=observers, progress=False, progress_file=counts
    )
    writer = None
    if metrics is not None:
        writer = SnapshotWriter(_metrics_file(info_dir, index), metrics)
        writer.start()
    try:
        outcome = run_soak_sync(opts)
    finally:
        if writer is not None:
            writer.stop()  # the last write holds the worker's final figures
    if index == 0:
        Path(info_dir, "info.json").write_text(json.dumps(outcome.info), encoding="utf-8")
    return outcome.results.to_dict()


def _metrics_file(info_dir: str, index: int) -> Path:
    return Path(info_dir, f"metrics-{index}.json")


def _run_workers(
    options: SoakOptions, workers: int, live: SoakMetrics | None = None
) -> SoakOutcome:
    """Run ``workers`` shards in processes against one server and merge them; ``live``
    (the metrics /metrics serves) follows the workers' figures during the run."""
    if options.shard is not None:
        raise HarnessInputError("--workers", "use --workers or --shard, not both")
    if options.target is not None:
        return _merge_workers(options, workers, live)
    fleet = options.fleet if isinstance(options.fleet, Fleet) else None
    profile = server_profile(options, fleet)
    ttl = access_ttl(options, fleet)
    with embedded_server(
        profile,
        run_seed(options, fleet),
        mode="process",
        access_ttl_s=ttl,
    ) as server:
        shared = replace(options, target=server.url, jwt_secret=server.jwt_secret)
        outcome = _merge_workers(shared, workers, live)
    outcome.info["target"] = "embedded"
    return outcome


def _merge_workers(
    options: SoakOptions, workers: int, live: SoakMetrics | None = None
) -> SoakOutcome:
    observers = options.observers
    with tempfile.TemporaryDirectory(prefix="harness-workers-") as tmp:
        # progress stays on in the copy: it tells each worker to write its counts file.
        plain = replace(options, observers=[], progress_stream=None, server_counters=False)
        if options.rate is None:  # closed model: the devices in flight are shared out
            total = options.concurrency or DEFAULT_CONCURRENCY
            plain.concurrency = max(1, -(-total // workers))
        # (open model: every shard schedules on the fleet's one timeline, so --rate is total)
        for obs in observers:
            obs.on_start({"run_id": options.run_id, "fleet": None})
        before: dict[str, float] = {}
        after: dict[str, float] = {}
        tls = client_context(options.insecure, options.ca_bundle)
        if options.server_counters and options.target:
            before = scrape_server_counters(options.target, context=tls)
        if live is not None:  # until its on_finish below, /metrics sums the workers' files
            live.follow([_metrics_file(tmp, i) for i in range(workers)])
        printer = None
        if options.progress:
            printer = WorkerProgress(tmp, workers, options.progress_stream or sys.stderr)
            printer.start()
        try:
            run_one = functools.partial(_worker_run, plain, tmp, live=live is not None)
            results = run_workers(workers, run_one)
        finally:
            if printer is not None:
                printer.stop()
        if before:
            after = scrape_server_counters(options.target, context=tls)  # type: ignore[arg-type]
        info = json.loads(Path(tmp, "info.json").read_text(encoding="utf-8"))
    info = {**info, "shard": None, "workers": workers, "devices": info.get("fleet_devices")}
    for obs in observers:
        obs.on_finish(results)
    return SoakOutcome(results, info, before, after)
