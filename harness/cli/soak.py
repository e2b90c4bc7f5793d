"""``harness soak``: run a fleet against a server, judge every answer, exit 0/1/2."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from harness.cli.mqtt_options import mqtt_options
from harness.cli.option_group import html_option
from harness.cli.profile_options import profile_options
from harness.cli.secret_values import resolve_secret
from harness.cli.tls_options import tls_options
from harness.errors import HarnessInputError
from harness.faults.windows import parse_fault
from harness.flags import Flags
from harness.mqtt.fleet import MqttOptions
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.tokens import check_access_ttl
from harness.run import SoakJob, SoakOptions, run_job
from harness.run.options import DEFAULT_CLAIMS, DEFAULT_CONCURRENCY, DEFAULT_FLEET
from harness.shard import Shard
from harness.workers import default_workers


def _workers(
    workers: int | None, target: str | None, shard: tuple[int, int] | None
) -> tuple[int, str]:
    """How many worker processes, and why (the run's header line says both)."""
    if workers is not None:
        if workers < 1:
            raise HarnessInputError("--workers", f"must be at least 1, got {workers}")
        return workers, "--workers"
    if shard is not None:  # one pod of a sharded Job: one process per shard
        return 1, "shard"
    if target is None:  # the embedded server is another process on the same cores
        return 1, "embedded server"
    return default_workers(), "cores"


def _shard(value: str | None) -> tuple[int, int] | None:
    shard = Shard.resolve(value)
    return None if shard.is_whole else (shard.index, shard.count)


@click.command()
@click.option("--target", metavar="URL", help="Base URL of the server; default: embedded server.")
@tls_options()
@click.option(
    "--claim-path", default=CLAIM_PATH, show_default=True, metavar="P", help="Claim endpoint path."
)
@click.option("--fleet", default=DEFAULT_FLEET, show_default=True, metavar="F", help="Fleet TOML.")
@click.option("--devices", type=int, metavar="N", help="Rescale the fleet to N devices.")
@click.option(
    "--duration", type=float, metavar="S", help="Run for S seconds (instead of --claims)."
)
@click.option("--claims", type=int, metavar="N", help=f"Send N claims (default {DEFAULT_CLAIMS}).")
@click.option(
    "--rate",
    type=float,
    metavar="R",
    help="Open model: R claims/s over the whole fleet, whatever the server does.",
)
@click.option(
    "--concurrency",
    type=int,
    metavar="C",
    help=f"Closed model: C devices in flight at once (default {DEFAULT_CONCURRENCY}).",
)
@click.option(
    "--flag",
    "flags",
    multiple=True,
    metavar="NAME=true|false",
    help="The server's declared configuration (repeat); the embedded server runs it.",
)
@click.option(
    "--keepalive", is_flag=True, help="Keep connections alive (default: fresh per claim)."
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, metavar="S", help="Per-claim timeout."
)
@click.option("--report", metavar="FILE", help="Write the JSON report.")
@click.option("--junit", metavar="FILE", help="Write JUnit XML (one testcase per check).")
@html_option()
@click.option("--metrics-port", type=int, metavar="P", help="Serve Prometheus /metrics on P.")
@click.option("--pushgateway", metavar="URL", help="Push final metrics to a Pushgateway.")
@click.option("--textfile", metavar="DIR", help="Write a .prom file for node_exporter.")
@click.option(
    "--journal",
    metavar="FILE",
    help="Write every claim outcome to FILE as JSON lines while the run goes (a killed "
    "run's report: harness report from-journal FILE).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="T:MODE@START+FOR",
    help="A fault window (repeat): redis:down@5s+5s, postgres:down@10s+8s, "
    "server:restart@8s+2s, server:cut:200@0.25@3s+5s. On the embedded server its Redis "
    "(and PostgreSQL) are real and behind fault proxies; the claims in a window are "
    "judged by the profile's failure rows.",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="EXPR",
    help="Gate the exit code on a figure (repeat): p95<0.5, p99<1.0, error_rate<0.01.",
)
@click.option(
    "--seed",
    type=int,
    metavar="N",
    help="Override the fleet's seed (new device IDs: provision a target with the same seed).",
)
@click.option("--shard", metavar="I/N", help="Run slice I of N (default: JOB_COMPLETION_INDEX).")
@click.option(
    "--workers",
    type=int,
    metavar="N",
    help="Run N processes on this machine, one slice of the fleet each, merged into one "
    "report. Default with --target: one per usable core; without --target: 1, because the "
    "embedded server runs on the same cores; with --shard (or a Job index): 1.",
)
@click.option(
    "--run-id",
    metavar="ID",
    help="Run ID for the report and the Pushgateway grouping key (default: random). "
    "Give every shard of one Kubernetes Job the same ID.",
)
@profile_options()
@mqtt_options()
@click.option(
    "--access-ttl",
    type=int,
    metavar="SECONDS",
    help="The access-token lifetime the server issues (default: the fleet's [session] "
    "access_ttl, which the embedded server is told, else 3600): tokens are judged by it "
    "and sessions refresh before it runs out.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress on stderr, once a second (default: when stderr is a terminal).",
)
def soak(
    target: str | None,
    tls_settings: dict[str, Any],
    claim_path: str,
    fleet: str,
    devices: int | None,
    duration: float | None,
    claims: int | None,
    rate: float | None,
    concurrency: int | None,
    flags: tuple[str, ...],
    keepalive: bool,
    timeout: float,
    report: str | None,
    junit: str | None,
    html_path: str | None,
    metrics_port: int | None,
    pushgateway: str | None,
    textfile: str | None,
    journal: str | None,
    faults: tuple[str, ...],
    thresholds: tuple[str, ...],
    seed: int | None,
    shard: str | None,
    workers: int | None,
    run_id: str | None,
    server_profile: dict[str, Any],
    mqtt_settings: MqttOptions | None,
    access_ttl: int | None,
    progress: bool | None,
) -> int:
    """Run a fleet of virtual ESP32s against a claim server and check every answer.

    Without --target the embedded reference server runs the --profile (default: the
    fleet file's, else v5.0) with the --flag values; with --target, --profile and
    --flag state what the server is believed to run and the
    fleet's provisioned devices are taken to be loaded on it (harness provision
    export). With JWT_SECRET in the environment, token signatures of a target are
    verified too. An https:// target's certificate is verified (system CAs, or
    --ca-bundle; --insecure skips it, with a warning). Exit 0: every check and
    threshold passed; 1: one failed; 2: bad usage.
    """
    if duration is not None and claims is not None:
        raise click.UsageError("give --duration or --claims, not both")
    if rate is not None and concurrency is not None:
        raise click.UsageError("give --rate or --concurrency, not both")
    profile = server_profile
    slice_ = _shard(shard)
    n_workers, workers_source = _workers(workers, target, slice_)
    options = SoakOptions(
        target=target,
        claim_path=claim_path,
        fleet=fleet,
        devices=devices,
        seed=seed,
        claims=claims,
        duration=duration,
        rate=rate,
        concurrency=concurrency,
        flags=Flags().with_overrides(flags),
        **profile,
        **tls_settings,
        keepalive=keepalive,
        timeout=timeout,
        shard=slice_,
        run_id=run_id,
        progress=sys.stderr.isatty() if progress is None else progress,
        journal=journal,
        faults=tuple(parse_fault(f) for f in faults),
        mqtt=mqtt_settings,
        access_ttl_s=check_access_ttl(access_ttl) if access_ttl is not None else None,
        server_mode="process",
        # A target's token secret, when the operator has it: signatures get verified too.
        # It may say @FILE or env:NAME, as serve's --jwt-secret may.
        jwt_secret=resolve_secret(os.environ.get("JWT_SECRET") or None, "JWT_SECRET")
        if target
        else None,
    )
    job = SoakJob(
        options,
        workers=n_workers,
        workers_source=workers_source,
        thresholds=list(thresholds),
        report=report,
        junit=junit,
        html=html_path,
        metrics_port=metrics_port,
        pushgateway=pushgateway,
        textfile=textfile,
    )
    return run_job(job).exit_code
