"""``harness compat``: which cohorts break if NORMALIZE_IDS_IN_HMAC (or idempotency) changes."""

from __future__ import annotations

from typing import Any

import click

from harness.cli.option_group import html_option
from harness.cli.profile_options import profile_options
from harness.cli.tls_options import tls_options
from harness.errors import HarnessInputError
from harness.exporters import Exporters
from harness.flags import Flags
from harness.protocol.claim import CLAIM_PATH
from harness.report import fit


@click.command()
@click.option(
    "--fleet",
    "fleet_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Fleet file (fleets/*.toml).",
)
@click.option("--target", default=None, help="Base URL of the server (default: embedded server).")
@tls_options()
@click.option("--claim-path", default=CLAIM_PATH, show_default=True, help="Claim endpoint path.")
@click.option(
    "--flag",
    "flag_items",
    multiple=True,
    metavar="NAME=true|false",
    help="With --target: what the target runs. Without: the flags other than the two compared.",
)
@click.option(
    "--claims-per-cohort",
    default=100,
    show_default=True,
    help="Claims played per cohort and configuration.",
)
@click.option("--devices", type=int, default=None, help="Scale the fleet (as `soak --devices`).")
@click.option("--seed", type=int, default=None, help="Reseed the fleet (as `soak --seed`).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per claim.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Devices in flight while measuring (default: soak's 50; 1 for a target "
              "whose rate limit would answer 429s).")  # fmt: skip
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False))
@html_option()
@profile_options()
def compat(
    fleet_path: str,
    target: str | None,
    tls_settings: dict[str, Any],
    claim_path: str,
    flag_items: tuple[str, ...],
    claims_per_cohort: int,
    devices: int | None,
    seed: int | None,
    timeout: float,
    concurrency: int | None,
    report_path: str | None,
    html_path: str | None,
    server_profile: dict[str, Any],
) -> int:
    """Per cohort, what happens with NORMALIZE_IDS_IN_HMAC and ENABLE_IDEMPOTENCY off and on.

    Prints a matrix (cohort x configuration) of what devices end up with (the
    answer they act on: 200, 401, 404, 409...), the share of the fleet that
    would be rejected, and a go / no-go line for turning NORMALIZE on.

    Without --target every configuration is measured on the embedded reference
    server. With --target (its rows loaded, see `provision export`), the
    configuration declared with --flag is measured there and the other three
    are predicted by the oracle; each column says which.

    Exit codes: 0 GO, 1 NO-GO (a cohort would be locked out, or the measurement is not of
    the declared server), 2 bad usage (including a target that does not hold the fleet).
    """
    from harness.cli.probe import check_target_url
    from harness.compat import CompatOptions, run_compat_sync
    from harness.run.options import resolve_fleet_path

    if claims_per_cohort < 1:
        raise HarnessInputError("--claims-per-cohort", "must be at least 1")
    if timeout <= 0:
        raise HarnessInputError("--timeout", "must be positive")
    if target is not None:
        check_target_url(target)
    exporters = Exporters(report=report_path, quiet=True, html=html_path)  # matrix printed below
    exporters.check()
    profile = server_profile
    options = CompatOptions(
        fleet=resolve_fleet_path(fleet_path),
        target=target,
        claim_path=claim_path,
        flags=Flags().with_overrides(flag_items),
        claims_per_cohort=claims_per_cohort,
        devices=devices,
        seed=seed,
        timeout=timeout,
        concurrency=concurrency,
        **profile,
        **tls_settings,
    )
    report = run_compat_sync(options)
    go, line = report.normalize_verdict()
    head = (
        f"compat of fleet {report.fleet} ({report.devices:,} devices) against {report.target} "
        f"(profile {report.profile.name}); other flags: {_others(options.flags)}"
    )
    lines = [head, *report.table().splitlines(), "", line, report.idempotency_line()]
    click.echo("\n".join(fit(lines)))  # 100 columns, as soak's summary
    disagreements = report.disagreements()
    if disagreements:
        hint = "check the declared --flag (harness probe)" if target else "a harness bug"
        click.echo(
            f"warning: measured answers differ from the oracle for {', '.join(disagreements)}: "
            f"{hint}",
            err=True,
        )
    exporters.write(report.to_dict())
    return 0 if go else 1


def _others(flags: Flags) -> str:
    on = [
        name for name in flags.on() if name not in ("NORMALIZE_IDS_IN_HMAC", "ENABLE_IDEMPOTENCY")
    ]
    return ", ".join(on) or "none on"
