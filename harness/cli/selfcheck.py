"""``harness selfcheck``: the protocol core against the contract's published values."""

from __future__ import annotations

import click

from harness.protocol import derive_oob_v5

# The contract's own example (CONTRACT.md section 1).
KNOWN_DERIVATIONS = {
    "CCDBA795BAA4": "1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090",
    "ccdba795baa4": "99629CF2F66A557E0C3AB36A6D71F3F4F5D1DDBD8A3BA31753359698C497FE23",
}


@click.command()
@click.option("--device-id", default=None, help="Also print the v5 OOB secret for this ID.")
def selfcheck(device_id: str | None) -> int:
    """Check the v5 OOB derivation against the contract's examples."""
    ok = True
    for dev, want in KNOWN_DERIVATIONS.items():
        got = derive_oob_v5(dev)
        good = got == want
        ok &= good
        click.echo(f"{'ok  ' if good else 'FAIL'} derive({dev}) = {got[:8]}...{got[-8:]}")
    if device_id is not None:
        click.echo(f"derive({device_id}) = {derive_oob_v5(device_id)}")
    return 0 if ok else 1
