"""``harness sign``: one claim by hand."""

from __future__ import annotations

import click

from harness.cli.secret_values import PREFER_HELP, secret_option_callback
from harness.errors import HarnessInputError
from harness.protocol import ClaimRequest, user_agent


@click.command()
@click.option("--device-id", required=True, help="Device ID exactly as the firmware holds it.")
@click.option("--child-id", required=True, help="Child ID to claim for.")
@click.option("--nonce", required=True, help="Nonce, 16..64 hex characters, even length.")
@click.option(
    "--oob",
    required=True,
    metavar="@FILE|env:NAME|HEX",
    callback=secret_option_callback,
    help=f"OOB secret, 64 hex characters. {PREFER_HELP}",
)
@click.option(
    "--normalize",
    is_flag=True,
    help="Sign strip().lower() of both IDs, as firmware built for NORMALIZE_IDS_IN_HMAC does.",
)
@click.option("--firmware-version", default=None, help="Add firmware_version to the body.")
@click.option(
    "--firmware",
    "firmware_name",
    type=click.Choice(["claim-device", "live"]),
    default=None,
    help="Sign as that firmware claim path sends: live has no firmware_version in the body.",
)
@click.option(
    "--headers", is_flag=True, help="Print the firmware's request headers before the body."
)
def sign(
    device_id: str,
    child_id: str,
    nonce: str,
    oob: str,
    normalize: bool,
    firmware_version: str | None,
    firmware_name: str | None,
    headers: bool,
) -> None:
    """Print the JSON body a device would POST to /api/v1/pair/claim (--headers: and the
    request headers, Content-Type first, a blank line between).

    The HMAC is HMAC-SHA256(oob, device_id || child_id || nonce bytes) with the
    IDs as given (legacy) or normalised (--normalize). Use `harness selfcheck`
    to see the v5 OOB derivation for an ID.
    """
    from harness.firmware import FIRMWARES

    if firmware_version is not None and not _is_text(firmware_version):
        # Undecodable bytes on the command line: no header or JSON body can carry them.
        raise HarnessInputError("--firmware-version", "is not valid UTF-8 text")
    firmware = FIRMWARES[firmware_name] if firmware_name else None
    if firmware is not None and firmware.body_has_version and firmware_version is None:
        raise HarnessInputError("--firmware-version", f"{firmware.name} always sends one: give it")
    version = firmware_version or "5.0.3"
    req = ClaimRequest.build(
        device_id,
        child_id,
        nonce,
        oob,
        mode="normalized" if normalize else "legacy",
        firmware_version=None if firmware and not firmware.body_has_version else firmware_version,
    )
    if headers:
        lines = firmware.headers(version) if firmware else (("User-Agent", user_agent(version)),)
        for name, value in (("Content-Type", "application/json"), *lines):
            click.echo(f"{name}: {value}")
        click.echo("")
    click.echo(req.to_json().decode())


def _is_text(value: str) -> bool:
    """False for a value with undecodable command-line bytes (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
