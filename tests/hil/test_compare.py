"""``harness hil compare``: virtual boards and the simulator sign the same inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.hil.bench import load_bench
from harness.hil.compare import compare_bench, make_cases
from tests.support import run_harness

from .conftest import write_bench


def _run_compare(
    bench: Path, cases: int, logs: Path, json_path: Path
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a bench script would call it."""
    argv = ["hil", "compare", "--bench", str(bench), "--cases", str(cases)]
    argv += ["--log-dir", str(logs), "--json", str(json_path)]
    return run_harness(*argv, timeout=100)


def test_boards_agree_with_python_core_and_c_signer(tmp_path: Path) -> None:
    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.0.3", "5.1.0"]))
    outcome = compare_bench(bench, cases=8, log_dir=tmp_path / "logs")
    assert outcome.passed, outcome.table()
    by_name = {b.board: b for b in outcome.boards}
    assert (by_name["v0"].told_mode, by_name["v1"].told_mode) == ("legacy", "normalized")
    for cmp in outcome.boards:
        assert cmp.device_id_matches and len(cmp.cases) == 8
        assert all(c.board_matches and c.c_matches and c.body_matches for c in cmp.cases)
    table = outcome.table()
    assert "v0" in table and "5.1.0 normalized" in table and "DIFF" not in table


def test_board_running_other_firmware_than_declared_fails_with_a_table(tmp_path: Path) -> None:
    # v1 is flashed with 5.0.3 (legacy) while the bench tells the simulator it runs 5.1.0.
    bench = write_bench(
        tmp_path / "bench.toml", ["5.1.0", "5.0.3"], extra={1: "firmware = '5.1.0'"}
    )
    proc = _run_compare(bench, 6, tmp_path / "logs", tmp_path / "cmp.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["board", "simulator", "told"]
    v0 = next(line for line in lines if line.startswith("v0 "))
    v1 = next(line for line in lines if line.startswith("v1 "))
    assert v0.split()[-1] == "ok"
    assert "5.1.0 normalized" in v1 and "5.0.3 legacy" in v1 and "FAIL" in v1
    assert "board HMAC DIFF" in proc.stdout and lines[-1] == "DIFFERENT"
    data = json.loads((tmp_path / "cmp.json").read_text())
    rows = {b["board"]: b for b in data["boards"]}
    assert data["passed"] is False
    assert rows["v0"]["differing"] == 0 and rows["v1"]["differing"] == 6


def test_unwritable_json_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench.toml", ["5.1.0"])
    proc = _run_compare(bench, 1, tmp_path / "logs", tmp_path / "missing-dir" / "cmp.json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: --json: cannot write {tmp_path / 'missing-dir' / 'cmp.json'}: "
        "No such file or directory"
    ]


def test_cases_mix_child_id_case_so_modes_cannot_agree_by_luck() -> None:
    cases = make_cases(("child-1", "Child-Two"), 8, seed=1)
    assert len({c.nonce for c in cases}) == 8
    assert any(c.child_id != c.child_id.lower() for c in cases)
    assert cases == make_cases(("child-1", "Child-Two"), 8, seed=1)


def test_board_behind_the_signer_seam_signs_as_asked_or_refuses(tmp_path: Path) -> None:
    from harness.errors import ProtocolError
    from harness.hil.session import BenchSession
    from harness.signer import PythonSigner, Signer

    bench = load_bench(write_bench(tmp_path / "bench.toml", ["5.0.3"]))
    nonce = "0f" * 16
    with BenchSession(bench, tmp_path / "logs") as session:
        entry = session.board("v0")
        signer = entry.signer
        assert isinstance(signer, Signer)
        device_id = entry.identity.device_id
        oob_hex = signer.derive(device_id)
        want = PythonSigner().sign(device_id, "Child-Two", nonce, bytes.fromhex(oob_hex), "legacy")
        assert signer.sign(device_id, "Child-Two", nonce, bytes.fromhex(oob_hex), "legacy") == want
        refusals = [
            (
                "mode",
                lambda: signer.sign(device_id, "c", nonce, bytes.fromhex(oob_hex), "normalized"),
            ),
            ("oob_secret", lambda: signer.sign(device_id, "c", nonce, b"\x00" * 32, "legacy")),
            ("device_id", lambda: signer.sign("AABBCCDDEEFF", "c", nonce, b"\x00" * 32, "legacy")),
            ("device_id", lambda: signer.derive(device_id.lower())),
        ]
        for field, call in refusals:
            with pytest.raises(ProtocolError) as err:
                call()
            assert err.value.field == field
