"""``harness provision export``: the rows a server needs for a fleet, as JSON, SQL or CSV.

An operator loads these into a staging database before pointing ``harness soak
--target`` at it: the devices (lower-cased, as the server keys them) with the
OOB secret their firmware really uses and their active flag, and the children.
The one output of the harness that carries secrets, by nature: files are
written with mode 0600 and atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import click

from harness.errors import HarnessInputError

Format = Literal["json", "sql", "csv"]
FORMATS: tuple[str, ...] = ("json", "sql", "csv")
SQL_BATCH = 500
CSV_HEADER = ("kind", "id", "oob_secret_hex", "is_active")


def _sql_text(value: str) -> str:
    # IDs are validated [A-Za-z0-9_-]; quote-doubling anyway, so no input can break out.
    return "'" + value.replace("'", "''") + "'"


def _sql_bool(value: bool) -> str:
    return "true" if value else "false"


def _batches(rows: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def render_json(seed: dict[str, Any]) -> str:
    """The reference server's ``--seed`` format, one row per line for readable diffs."""
    lines = ["{", ' "devices": [']
    devices = [json.dumps(d, separators=(", ", ": ")) for d in seed["devices"]]
    lines.append(",\n".join(f"  {d}" for d in devices))
    lines += [" ],", ' "children": [']
    children = [json.dumps(c, separators=(", ", ": ")) for c in seed["children"]]
    lines.append(",\n".join(f"  {c}" for c in children))
    lines += [" ]", "}"]
    return "\n".join(line for line in lines if line) + "\n"


def render_sql(seed: dict[str, Any], fleet_name: str = "") -> str:
    """INSERTs for the server's PostgreSQL schema; rows already there are left alone."""
    out = [
        f"-- harness provision export{f' of fleet {fleet_name}' if fleet_name else ''}",
        "-- Contains OOB secrets: load, then delete this file.",
        "-- Schema first: `harness serve migrate --database-url URL` (or start with --migrate).",
        "BEGIN;",
    ]
    devices = [
        f"({_sql_text(d['device_id'])}, decode({_sql_text(d['oob_secret_hex'])}, 'hex'), "
        f"{_sql_bool(d['is_active'])})"
        for d in seed["devices"]
    ]
    for batch in _batches(devices, SQL_BATCH):
        out.append("INSERT INTO devices (device_id, oob_secret, is_active) VALUES")
        out.append(",\n".join(batch))
        out.append("ON CONFLICT (device_id) DO NOTHING;")
    children = [
        f"({_sql_text(c['child_id'])}, {_sql_bool(c['is_active'])})" for c in seed["children"]
    ]
    for batch in _batches(children, SQL_BATCH):
        out.append("INSERT INTO children (child_id, is_active) VALUES")
        out.append(",\n".join(batch))
        out.append("ON CONFLICT (child_id) DO NOTHING;")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


def render_csv(seed: dict[str, Any]) -> str:
    """One table, a ``kind`` column (``device``/``child``) telling the two row kinds apart."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for d in seed["devices"]:
        writer.writerow(("device", d["device_id"], d["oob_secret_hex"], _sql_bool(d["is_active"])))
    for c in seed["children"]:
        writer.writerow(("child", c["child_id"], "", _sql_bool(c["is_active"])))
    return buf.getvalue()


def export_fleet(
    fleet_path: str | os.PathLike[str],
    fmt: str,
    devices: int | None = None,
    seed: int | None = None,
) -> str:
    """The export text of a fleet file (scaled to ``devices``, reseeded as ``soak`` would be)."""
    from harness.fleet import load_fleet

    if fmt not in FORMATS:
        raise HarnessInputError("--format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    fleet = load_fleet(fleet_path)
    if devices is not None:
        if devices < 1:
            raise HarnessInputError("--devices", f"must be at least 1, got {devices}")
        fleet = fleet.scaled(devices)
    if seed is not None:
        fleet = fleet.with_seed(seed)
    rows = fleet.seed_export()
    if fmt == "json":
        return render_json(rows)
    if fmt == "sql":
        return render_sql(rows, fleet.name)
    return render_csv(rows)


def write_private(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` with mode 0600 (created so, never widened), replacing ``path`` atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # e.g. its directory is a file: nothing was made
            tmp.unlink(missing_ok=True)
        raise HarnessInputError(
            "--output", f"cannot write {target}: {exc.strerror or exc}"
        ) from None
    return target


@click.group()
def provision() -> None:
    """Provisioning data for a fleet (the rows a server must hold)."""


@provision.command("export")
@click.option(
    "--fleet",
    "fleet_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Fleet file (fleets/*.toml).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="json",
    show_default=True,
    help="json: the reference server's --seed file; sql: PostgreSQL INSERTs; csv: one table.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write here (mode 0600) instead of standard output.",
)
@click.option("--devices", type=int, default=None, help="Scale the fleet as `soak --devices`.")
@click.option("--seed", type=int, default=None, help="Reseed the fleet as `soak --seed`.")
def export(
    fleet_path: str, fmt: str, output: str | None, devices: int | None, seed: int | None
) -> int:
    """Write the devices (lower-cased, OOB secret hex, active flag) and children of a fleet.

    Load the result into the server under test before `harness soak --target`:
    JSON with `harness serve --seed FILE`, SQL with `psql -f FILE` after
    `harness serve migrate`, CSV with your own loader. Use the same --devices
    and --seed as the soak run, or the devices will not match.

    WARNING: this output contains every device's OOB secret in clear (a
    database needs them to verify claims). It is the only harness output that
    does; files are created with mode 0600. Keep it out of CI artefacts and
    delete it after loading.
    """
    text = export_fleet(fleet_path, fmt, devices, seed)
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    path = write_private(output, text)
    click.echo(f"wrote {path} ({fmt}, mode 0600; contains OOB secrets)", err=True)
    return 0
