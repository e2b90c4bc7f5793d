"""provision export --format sql: psql loads it into real PostgreSQL; the server claims on it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import main
from harness.fleet import load_fleet
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from tests.cli.test_provision import _claim
from tests.support.fleet_fixture import write_small_fleet
from tests.support.services import PostgresServer


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def _run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code or 0)


def _psql_file(pg: PostgresServer, database: str, path: Path) -> None:
    res = subprocess.run(
        [
            *(pg.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"),
            *("-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-d", database, "-f", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr


def test_sql_export_loads_with_psql_and_rows_match(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.create_database("provision_export")
    assert _run_cli(["serve", "migrate", "--database-url", url]) == 0
    fleet_path = write_small_fleet(tmp_path)
    sql = tmp_path / "rows.sql"
    code = _run_cli(
        ["provision", "export", "--fleet", str(fleet_path), "--format", "sql", "-o", str(sql)]
    )
    assert code == 0
    _psql_file(postgres, "provision_export", sql)
    _psql_file(postgres, "provision_export", sql)  # again: ON CONFLICT DO NOTHING, no error

    expected = load_fleet(fleet_path).seed_export()
    rows = postgres.execute(
        "SELECT device_id, upper(encode(oob_secret, 'hex')), is_active FROM devices "
        "ORDER BY device_id",
        "provision_export",
    ).splitlines()
    want = sorted(
        f"{d['device_id']}|{d['oob_secret_hex']}|{'t' if d['is_active'] else 'f'}"
        for d in expected["devices"]
    )
    assert rows == want
    children = postgres.execute(
        "SELECT child_id, is_active FROM children ORDER BY child_id", "provision_export"
    ).splitlines()
    assert children == sorted(
        f"{c['child_id']}|{'t' if c['is_active'] else 'f'}" for c in expected["children"]
    )

    # The server on that database (no seed of its own) accepts the fleet's devices.
    fleet = load_fleet(fleet_path)
    legacy = next(d for d in fleet.devices() if d.cohort.name == "v5-legacy-upper")
    factory = next(d for d in fleet.devices() if d.cohort.name == "factory-secret")
    with EmbeddedServer(ServerConfig(database_url=url)) as server:
        assert asyncio.run(_claim(server.url, legacy)) == 200
        assert asyncio.run(_claim(server.url, factory)) == 200
