"""``harness sign``: one claim by hand."""

from __future__ import annotations

import click

from harness.protocol import ClaimRequest


@click.command()
@click.option("--device-id", required=True, help="Device ID exactly as the firmware holds it.")
@click.option("--child-id", required=True, help="Child ID to claim for.")
@click.option("--nonce", required=True, help="Nonce, 16..64 hex characters, even length.")
@click.option("--oob", required=True, help="OOB secret, 64 hex characters.")
@click.option(
    "--normalize",
    is_flag=True,
    help="Sign strip().lower() of both IDs, as firmware built for NORMALIZE_IDS_IN_HMAC does.",
)
@click.option("--firmware-version", default=None, help="Add firmware_version to the body.")
def sign(
    device_id: str,
    child_id: str,
    nonce: str,
    oob: str,
    normalize: bool,
    firmware_version: str | None,
) -> None:
    """Print the JSON body a device would POST to /api/v1/pair/claim.

    The HMAC is HMAC-SHA256(oob, device_id || child_id || nonce bytes) with the
    IDs as given (legacy) or normalised (--normalize). Use `harness selfcheck`
    to see the v5 OOB derivation for an ID.
    """
    req = ClaimRequest.build(
        device_id,
        child_id,
        nonce,
        oob,
        mode="normalized" if normalize else "legacy",
        firmware_version=firmware_version,
    )
    click.echo(req.to_json().decode())
