"""``harness probe``: which flags a claim server really runs, from a handful of claims."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import click

from harness.cli.secret_values import PREFER_HELP, secret_option_callback
from harness.cli.tls_options import tls_options
from harness.errors import HarnessInputError
from harness.exporters import Exporters
from harness.flags import Flags
from harness.profiles import BUILDS
from harness.protocol import parse_oob_hex
from harness.protocol.claim import CLAIM_PATH


@click.command()
@click.option("--target", default=None, help="Base URL of the server (default: embedded server).")
@tls_options()
@click.option("--claim-path", default=CLAIM_PATH, show_default=True, help="Claim endpoint path.")
@click.option("--device-id", default=None, help="A device provisioned on the target.")
@click.option(
    "--oob",
    default=None,
    metavar="@FILE|env:NAME|HEX",
    callback=secret_option_callback,
    help=f"That device's OOB secret as the target stores it (64 hex). {PREFER_HELP}",
)
@click.option("--child-id", default=None, help="An active child on the target.")
@click.option(
    "--fleet",
    "fleet_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Take the device and child from this fleet (loaded with `provision export`).",
)
@click.option(
    "--flag",
    "flag_items",
    multiple=True,
    metavar="NAME=true|false",
    help="Embedded server only: start it with these flags (to try the probe).",
)
@click.option(
    "--profile",
    "profile_name",
    default="v5.0",
    show_default=True,
    metavar="|".join(BUILDS),
    help="Embedded server only: run this build (to try the probe).",
)
@click.option(
    "--environment",
    default="production",
    show_default=True,
    help="Embedded server only: its ENVIRONMENT.",
)
@click.option("--bare-router", is_flag=True, help="Embedded server only: no deployed middleware.")
@click.option(
    "--expect",
    default=None,
    metavar="|".join(BUILDS),
    help="Exit 1 unless the probe names this build (a staging check before a soak).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per claim.")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False))
def probe(
    target: str | None,
    tls_settings: dict[str, Any],
    claim_path: str,
    device_id: str | None,
    oob: str | None,
    child_id: str | None,
    fleet_path: str | None,
    flag_items: tuple[str, ...],
    profile_name: str,
    environment: str,
    bare_router: bool,
    expect: str | None,
    timeout: float,
    report_path: str | None,
) -> int:
    """Work out which build a server is (v5.0, v5-head, atomic) and which flags it runs.

    Sends a handful of claims: one provisioned device signed the legacy way and
    the normalised way (with v5-head's static secret too when its own is
    refused), its first claim resent byte for byte, an unknown esp32-* device,
    with idempotency on up to three bursts of identical claims (the v5 race),
    and on v5-head an unknown child (ENVIRONMENT). Prints the build and each
    flag with its evidence, and the --profile and --flag values to declare for
    `harness soak --target`.

    With --target give a provisioned device (--device-id, --oob, --child-id) or
    a fleet whose rows are loaded on the target (--fleet). Without --target it
    probes the embedded reference server, started with --flag.

    Exit codes: 0 every probed flag decided, 1 a flag undecidable (unexpected
    answers), 2 bad usage.
    """
    from harness.probe import ProbeDevice, device_from_fleet, probe_embedded, probe_target
    from harness.profiles import build_named, parse_environment
    from harness.tls import client_context

    if expect is not None:
        expect = build_named(expect, "--expect").name
    if not 0 < timeout < math.inf:  # nan and inf too: a claim that can never time out
        raise HarnessInputError("--timeout", f"must be a positive finite number, got {timeout}")
    exporters = Exporters(report=report_path, quiet=True)  # the table is printed below
    exporters.check()  # before any claim: a bad --report never costs the probe's answer
    manual = [v is not None for v in (device_id, oob, child_id)]
    if any(manual) and not all(manual):
        raise HarnessInputError("--device-id", "give --device-id, --oob and --child-id together")
    if target is None:
        if any(manual) or fleet_path:
            raise HarnessInputError(
                "--target", "--device-id/--fleet need --target (the embedded server seeds its own)"
            )
        result = probe_embedded(
            Flags().with_overrides(flag_items),
            build_named(profile_name).name,
            parse_environment(environment),
            bare_router,
        )
    else:
        if flag_items:
            raise HarnessInputError("--flag", "only for the embedded server; probe finds them out")
        if profile_name != "v5.0" or environment != "production" or bare_router:
            raise HarnessInputError(
                "--profile", "only for the embedded server; probe names the target's build"
            )
        check_target_url(target)
        tls = client_context(**tls_settings)
        if all(manual):
            assert device_id is not None and oob is not None and child_id is not None
            device = ProbeDevice(device_id, parse_oob_hex(oob, "--oob"), child_id)
        elif fleet_path:
            from harness.fleet import load_fleet
            from harness.preflight import preflight

            device = device_from_fleet(fleet_path)
            fleet = load_fleet(fleet_path)
            asyncio.run(preflight(target, fleet, claim_path, timeout, ssl_context=tls))
        else:
            raise HarnessInputError(
                "--target", "needs a provisioned device: --device-id/--oob/--child-id or --fleet"
            )
        result = asyncio.run(probe_target(target, device, claim_path, timeout, tls))
    click.echo(f"probe of {result.target}")
    click.echo(result.table())
    if result.soak_line():
        click.echo(f"\ndeclare for soak: {result.soak_line()}")
    exporters.write(result.to_dict())
    if expect is not None and result.profile.name != expect:
        click.echo(f"expected {expect}, the probe names {result.profile.name}", err=True)
        return 1
    if not result.decided:
        click.echo("undecided: see the evidence column", err=True)
        return 1
    return 0


def check_target_url(url: str) -> None:
    """``--target`` must be an http(s):// base URL (probe and compat)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise HarnessInputError("--target", f"{url!r} is not an http(s):// base URL")
