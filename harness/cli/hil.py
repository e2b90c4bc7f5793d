"""``harness hil``: drive real or virtual ESP32 boards from a bench file.

Thin click layer: ``run`` over :func:`harness.hil.run.run_bench`, ``compare``
over :func:`harness.hil.compare.compare_bench`; ``flash`` and ``virtual-board``
come from ``harness.cli.hil_board`` when it is installed. A board that fails at
run time (no answer, boot loop, vanished port) is a failed run (exit 1) with
one line naming the board, never a traceback; a bad bench file is exit 2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import click

from harness.cli.option_group import html_option
from harness.cli.profile_options import profile_options
from harness.cli.tls_options import tls_options
from harness.errors import HarnessInputError
from harness.exporters import Exporters
from harness.hil.bench import load_bench
from harness.hil.board_errors import BoardError
from harness.hil.run import run_bench
from harness.run import SoakOptions
from harness.run.options import prepare_fleet, resolve_fleet_path
from harness.tls import check_certificate, client_context


@click.group("hil")
def hil() -> None:
    """Hardware-in-the-loop: flash, drive and check real or virtual ESP32 boards.

    \b
      harness hil run --bench hil/bench.example.toml --report out.json
      harness hil compare --bench hil/bench.example.toml --cases 16
    """


def _bench(
    path: str,
    flags: tuple[str, ...],
    target: str | None,
    claims: int | None,
    profile: dict[str, Any] | None = None,
) -> Any:
    bench = load_bench(path, extra_flags=flags)
    changes: dict[str, Any] = {}
    if profile is not None:  # --profile and its options override the bench file's
        from harness.profiles import declared_profile

        changes["profile"] = declared_profile(
            bench.flags,
            profile,
            default_name=bench.profile.name,
            default_environment=bench.profile.environment,
        )
    if target is not None:
        changes["target"] = target.rstrip("/")
    if claims is not None:
        changes["claims_per_board"] = claims
    return dataclasses.replace(bench, **changes) if changes else bench


def _log_dir(log_dir: str | None, report: str | None) -> Path | None:
    if log_dir:
        return Path(log_dir)
    if report:
        return Path(report).with_suffix(".logs")
    return None


@hil.command("run")
@click.option("--bench", "bench_path", required=True, help="Bench file (TOML).")
@click.option("--target", help="Server base URL; default: start the embedded server.")
@tls_options()
@click.option("--flag", "flags", multiple=True, metavar="NAME=VALUE", help="Override [flags].")
@click.option("--report", "report_path", help="Write the JSON report here.")
@click.option("--junit", "junit_path", help="Write JUnit XML here.")
@html_option()
@click.option("--textfile", help="Write Prometheus metrics into this directory (node_exporter).")
@click.option("--pushgateway", metavar="URL", help="Push final metrics to a Pushgateway.")
@click.option("--claims-per-board", type=click.IntRange(min=1), help="Override the bench's.")
@click.option("--threshold", "thresholds", multiple=True, metavar="EXPR", help="e.g. p95<0.5")
@click.option("--log-dir", help="Per-board logs (default: beside --report, else temporary).")
@click.option("--no-flash", is_flag=True, help="Do not flash; boards run what they have.")
@click.option("--fleet", "fleet_path", help="A fleet whose virtual cohorts run beside the boards.")
@click.option("--claims", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Claims of the --fleet's virtual devices.")  # fmt: skip
@profile_options()
def run(
    bench_path: str,
    target: str | None,
    tls_settings: dict[str, Any],
    flags: tuple[str, ...],
    report_path: str | None,
    junit_path: str | None,
    html_path: str | None,
    textfile: str | None,
    pushgateway: str | None,
    claims_per_board: int | None,
    thresholds: tuple[str, ...],
    log_dir: str | None,
    no_flash: bool,
    fleet_path: str | None,
    claims: int,
    server_profile: dict[str, Any],
) -> int:
    """Flash where needed, reset, read identities, have each board sign claims, judge them.

    The oracle judges against the bench's [bench] profile and [flags] (--profile and
    --flag override them); without a target the embedded server runs that profile.
    """
    profile = server_profile
    bench = _bench(bench_path, flags, target, claims_per_board, profile)
    exporters = Exporters(report_path, junit_path, None, pushgateway, textfile, html=html_path)
    exporters.check()
    if bench.target is not None and not bench.board_claims:
        # A wrong certificate is bad configuration: exit 2 before any board comes up.
        context = client_context(**tls_settings)
        asyncio.run(check_certificate(bench.target, context))
    fleet = prepare_fleet(SoakOptions(fleet=resolve_fleet_path(fleet_path))) if fleet_path else None
    (metrics,) = exporters.start(None, f"bench:{bench.name}") or (None,)
    try:
        outcome = run_bench(
            bench,
            log_dir=_log_dir(log_dir, report_path),
            thresholds=thresholds,
            flash=not no_flash,
            metrics=metrics,
            fleet=fleet,
            claims=claims,
            **tls_settings,
        )
    except BoardError as exc:
        raise click.ClickException(str(exc)) from None
    exporters.write(outcome.report)
    return 0 if outcome.passed else 1


@hil.command("compare")
@click.option("--bench", "bench_path", required=True, help="Bench file (TOML).")
@click.option("--cases", type=click.IntRange(min=1, max=10_000), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the nonces.")
@click.option("--log-dir", help="Per-board logs (default: temporary).")
@click.option("--no-flash", is_flag=True, help="Do not flash; boards run what they have.")
@click.option("--json", "json_path", help="Write the comparison as JSON here.")
def compare(
    bench_path: str,
    cases: int,
    seed: int,
    log_dir: str | None,
    no_flash: bool,
    json_path: str | None,
) -> int:
    """Boards and the simulator (Python core, C signer) sign the same inputs; differences fail."""
    from harness.hil.compare import compare_bench

    bench = load_bench(bench_path)
    try:
        outcome = compare_bench(
            bench, cases=cases, seed=seed, log_dir=log_dir and Path(log_dir), flash=not no_flash
        )
    except BoardError as exc:
        raise click.ClickException(str(exc)) from None
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(outcome.to_dict(), indent=1) + "\n")
        except OSError as exc:
            raise HarnessInputError(
                "--json", f"cannot write {json_path}: {exc.strerror or exc}"
            ) from None
    click.echo(outcome.table())
    click.echo("SAME" if outcome.passed else "DIFFERENT")
    return 0 if outcome.passed else 1


def _add_board_commands() -> None:
    """``flash`` and ``virtual-board`` live with the virtual board (``harness.cli.hil_board``)."""
    module = importlib.import_module("harness.cli.hil_board")
    for name in ("flash", "virtual_board"):
        cmd = getattr(module, name, None)
        if isinstance(cmd, click.Command):
            hil.add_command(cmd)


_add_board_commands()
