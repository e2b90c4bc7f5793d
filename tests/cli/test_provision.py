"""provision export: the rows a server needs, loadable as they are, written privately."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.provision import export_fleet
from harness.fleet import load_fleet
from harness.fleet.model import VirtualDevice
from harness.protocol import new_nonce, normalize_id, sign_claim
from harness.protocol.claim import CLAIM_PATH
from harness.server.seed import load_seed
from harness.transport import make_transport
from tests.support import free_port
from tests.support.fleet_fixture import write_small_fleet


def _run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code or 0)


async def _claim(url: str, dev: VirtualDevice) -> int:
    transport = make_transport(url)
    try:
        nonce = new_nonce()
        hmac_hex = sign_claim(dev.device_id, dev.child_id, nonce, dev.oob, dev.signing)  # type: ignore[arg-type]
        resp = await transport.post(CLAIM_PATH, dev.body(nonce, hmac_hex), dev.headers)
        return resp.status
    finally:
        await transport.aclose()


@contextmanager
def _serve(seed_file: Path) -> Iterator[str]:
    """``harness serve --seed FILE`` as its own process, the way an operator loads the rows."""
    port = free_port()
    harness_bin = Path(sys.executable).with_name("harness")
    proc = subprocess.Popen(
        [
            *(str(harness_bin), "serve", "--port", str(port)),
            *("--seed", str(seed_file), "--log-file", "none"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"harness serve did not start: {out}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_json_export_loads_into_the_reference_server_and_devices_claim(tmp_path: Path) -> None:
    fleet_path = write_small_fleet(tmp_path)
    out = tmp_path / "seed.json"
    assert _run_cli(["provision", "export", "--fleet", str(fleet_path), "--output", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    seed = load_seed(out)  # what `harness serve --seed` reads
    fleet = load_fleet(fleet_path)
    provisioned = [d for d in fleet.devices() if d.provisioned]
    assert [d.device_id for d in seed.devices] == [d.normalized_id for d in provisioned]
    assert all(d.device_id == d.device_id.lower() for d in seed.devices)
    assert {c.child_id for c in seed.children} == {normalize_id(c.child_id) for c in fleet.children}

    by_cohort: dict[str, VirtualDevice] = {}
    for dev in fleet.devices():
        by_cohort.setdefault(dev.cohort.name, dev)
    with _serve(out) as url:
        statuses = {name: asyncio.run(_claim(url, dev)) for name, dev in by_cohort.items()}
    # Default flags: legacy signing of the upper-case ID is what the server verifies.
    assert statuses["v5-legacy-upper"] == 200
    assert statuses["factory-secret"] == 200  # the provisioned random secret was exported
    assert statuses["disabled"] == 403  # the active flag was exported
    assert statuses["auto-register"] == 404  # not provisioned, so not exported
    assert statuses["v5-normalized"] == 401  # NORMALIZE off: the server and firmware disagree


def test_csv_has_a_header_and_one_row_per_device_and_child(tmp_path: Path) -> None:
    fleet_path = write_small_fleet(tmp_path)
    rows = list(csv.DictReader(io.StringIO(export_fleet(fleet_path, "csv"))))
    fleet = load_fleet(fleet_path)
    devices = [r for r in rows if r["kind"] == "device"]
    children = [r for r in rows if r["kind"] == "child"]
    expected = fleet.seed_export()
    assert [(r["id"], r["oob_secret_hex"], r["is_active"]) for r in devices] == [
        (d["device_id"], d["oob_secret_hex"], str(d["is_active"]).lower())
        for d in expected["devices"]
    ]
    assert len(children) == len(expected["children"])
    assert {r["is_active"] for r in children} == {"true", "false"}


def test_devices_option_scales_like_soak(tmp_path: Path) -> None:
    fleet_path = write_small_fleet(tmp_path)
    data = json.loads(export_fleet(fleet_path, "json", devices=40))
    scaled = load_fleet(fleet_path).scaled(40)
    assert len(data["devices"]) == sum(1 for d in scaled.devices() if d.provisioned)
    assert len(data["devices"]) > 10


def test_bad_usage_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["provision", "export", "--fleet", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.toml" in err
    fleet_path = write_small_fleet(tmp_path)
    assert _run_cli(["provision", "export", "--fleet", str(fleet_path), "--format", "xml"]) == 2
    code = _run_cli(
        ["provision", "export", "--fleet", str(fleet_path), "-o", str(tmp_path / "no" / "x")]
    )
    assert code == 2


def test_help_warns_about_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["provision", "export", "--help"]) == 0
    assert "OOB secret" in capsys.readouterr().out
