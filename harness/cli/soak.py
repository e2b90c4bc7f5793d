"""``harness soak``: run a fleet against a server, judge every answer, exit 0/1/2."""

from __future__ import annotations

import os
import sys

import click

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.fleet.job import SoakJob, run_job
from harness.fleet.runner import DEFAULT_CLAIMS, DEFAULT_FLEET, SoakOptions
from harness.protocol.claim import CLAIM_PATH


def _shard(value: str | None) -> tuple[int, int] | None:
    try:
        from harness.shard import Shard
    except ImportError:
        if value is None:
            return None
        raise HarnessInputError("--shard", "not available yet (harness.shard is missing)") from None
    shard = Shard.resolve(value)
    return None if shard.is_whole else (shard.index, shard.count)


@click.command()
@click.option("--target", metavar="URL", help="Base URL of the server; default: embedded server.")
@click.option("--claim-path", default=CLAIM_PATH, show_default=True, metavar="P")
@click.option("--fleet", default=DEFAULT_FLEET, show_default=True, metavar="F", help="Fleet TOML.")
@click.option("--devices", type=int, metavar="N", help="Rescale the fleet to N devices.")
@click.option("--duration", type=float, metavar="S", help="Run for S seconds.")
@click.option("--claims", type=int, metavar="N", help=f"Send N claims (default {DEFAULT_CLAIMS}).")
@click.option("--rate", type=float, metavar="R", help="Open model: R claims/s (whole fleet).")
@click.option("--concurrency", type=int, metavar="C", help="Closed model: C devices at once.")
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
@click.option("--timeout", type=float, default=10.0, show_default=True, metavar="S")
@click.option("--report", metavar="FILE", help="Write the JSON report.")
@click.option("--junit", metavar="FILE", help="Write JUnit XML (one testcase per check).")
@click.option("--metrics-port", type=int, metavar="P", help="Serve Prometheus /metrics on P.")
@click.option("--pushgateway", metavar="URL", help="Push final metrics to a Pushgateway.")
@click.option("--textfile", metavar="DIR", help="Write a .prom file for node_exporter.")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR", help="e.g. p95<0.5")
@click.option(
    "--seed",
    type=int,
    metavar="N",
    help="Override the fleet's seed (new device IDs: provision a target with the same seed).",
)
@click.option("--shard", metavar="I/N", help="Run slice I of N (default: JOB_COMPLETION_INDEX).")
@click.option("--workers", type=int, default=1, show_default=True, metavar="N")
@click.option("--progress/--no-progress", default=None, help="Live progress (default: on a TTY).")
def soak(
    target: str | None,
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
    metrics_port: int | None,
    pushgateway: str | None,
    textfile: str | None,
    thresholds: tuple[str, ...],
    seed: int | None,
    shard: str | None,
    workers: int,
    progress: bool | None,
) -> int:
    """Run a fleet of virtual ESP32s against a claim server and check every answer.

    Without --target the embedded reference server runs with the --flag values;
    with --target, --flag states what the server is believed to run and the
    fleet's provisioned devices are taken to be loaded on it (harness provision
    export). With JWT_SECRET in the environment, token signatures of a target are
    verified too. Exit 0: every check and threshold passed; 1: one failed; 2: bad usage.
    """
    if duration is not None and claims is not None:
        raise click.UsageError("give --duration or --claims, not both")
    if rate is not None and concurrency is not None:
        raise click.UsageError("give --rate or --concurrency, not both")
    if workers < 1:
        raise HarnessInputError("--workers", f"must be at least 1, got {workers}")
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
        keepalive=keepalive,
        timeout=timeout,
        shard=_shard(shard),
        progress=sys.stderr.isatty() if progress is None else progress,
        server_mode="process",
        # A target's token secret, when the operator has it: signatures get verified too.
        jwt_secret=os.environ.get("JWT_SECRET") or None if target else None,
    )
    job = SoakJob(
        options,
        workers=workers,
        thresholds=list(thresholds),
        report=report,
        junit=junit,
        metrics_port=metrics_port,
        pushgateway=pushgateway,
        textfile=textfile,
    )
    return run_job(job).exit_code
