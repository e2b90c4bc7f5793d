"""Bench files: the example parses, and every mistake is one line with file, line and key."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.errors import HarnessInputError
from harness.hil.bench import load_bench, normalize_mac, resolve_port
from tests.support import ROOT, run_harness

IMAGE = ROOT / "firmware_fixtures" / "images" / "claim_probe-5.1.0.bin"


def _bench(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(text)
    return path


def test_example_bench_parses_with_virtual_boards_and_images() -> None:
    bench = load_bench(ROOT / "hil" / "bench.example.toml")
    assert bench.target is None
    assert [b.virtual for b in bench.boards] == [True, True]
    assert all(b.image is not None and b.image.is_file() for b in bench.boards)
    assert {b.image.name for b in bench.boards if b.image} == {
        "claim_probe-5.1.0.bin",
        "claim_probe-5.0.3.bin",
    }
    assert bench.boards[0].mac == "CC:DB:A7:95:BA:A4"


def test_flags_from_file_and_command_line_override() -> None:
    bench = load_bench(
        ROOT / "hil" / "bench.example.toml", extra_flags=["NORMALIZE_IDS_IN_HMAC=true"]
    )
    assert bench.flags.normalize_ids_in_hmac is True
    assert bench.flags.enable_idempotency is False


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("[bench]\nclaims_per_board = 0\n[[board]]\nport='/dev/x'\n", 2, "claims_per_board"),
        ("[bench]\nbogus = 1\n[[board]]\nport='/dev/x'\n", 2, "bench.bogus: unknown key"),
        ("[[board]]\nport='/dev/x'\n[[board]]\nname='b'\nmac='nope'\n", 5, "board[1].mac"),
        ("[[board]]\nport='/dev/x'\n\n[[board]]\nport = '/dev/x'\n", 5, "already used"),
        ("[[board]]\nname = 'a'\n", 1, "say how to find it"),
        ("[[board]]\nvirtual = true\nport = 'socket://h:1'\n", 3, "no port to find"),
        ("[flags]\nNORMALIZE_IDS_IN_HMAC = 'maybe'\n[[board]]\nport='x'\n", 2, "not a boolean"),
        ("[flags]\nNO_SUCH = true\n[[board]]\nport='x'\n", 2, "unknown flag"),
        ("[[board]]\nport='x'\nimage = 'missing.bin'\n", 3, "no such file"),
        ("[bench]\ntarget = 'ftp://x'\n[[board]]\nport='x'\n", 2, "bench.target"),
        ("[bench]\nchildren = ['bad child']\n[[board]]\nport='x'\n", 2, "children[0]"),
        ("[bench]\nname = \n", 2, "toml"),
        ("[bench]\nname = 'x'\n", 1, "at least one [[board]]"),
        ("[[board]]\nport='x'\noffset = 0x10001\n", 3, "4 KiB"),
    ],
)
def test_bad_bench_is_one_line_with_file_line_and_key(
    tmp_path: Path, body: str, line: int, needle: str
) -> None:
    path = _bench(tmp_path, body)
    with pytest.raises(HarnessInputError) as err:
        load_bench(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}: "), msg
    assert needle in msg


def test_cli_reports_bad_bench_with_exit_2(tmp_path: Path) -> None:
    path = _bench(tmp_path, "[[board]]\nport='x'\nspeed = 3\n")
    proc = run_harness("hil", "run", "--bench", str(path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:3: board[0].speed: unknown key" in lines[0]


def test_boards_are_found_by_serial_number_or_usb_location(tmp_path: Path) -> None:
    path = _bench(
        tmp_path,
        f"[bench]\nimage = '{IMAGE}'\n[[board]]\nserial_number = 'A1'\n"
        "[[board]]\nusb_location = '1-1.4'\n",
    )
    bench = load_bench(path)
    listed = [
        SimpleNamespace(device="/dev/ttyUSB3", serial_number="A1", location="1-1.2"),
        SimpleNamespace(device="/dev/ttyACM0", serial_number="ZZ", location="1-1.4"),
    ]
    assert resolve_port(bench.boards[0], bench, listed) == "/dev/ttyUSB3"
    assert resolve_port(bench.boards[1], bench, listed) == "/dev/ttyACM0"
    with pytest.raises(HarnessInputError, match=r"bench.toml:5: board\[1\].usb_location"):
        resolve_port(bench.boards[1], bench, listed[:1])


def test_mac_spellings_normalise() -> None:
    assert normalize_mac("ccdba795baa4") == "CC:DB:A7:95:BA:A4"
    assert normalize_mac("CC-DB-A7-95-BA-A4") == "CC:DB:A7:95:BA:A4"


def test_hil_run_refuses_an_unwritable_report_before_touching_boards(tmp_path: Path) -> None:
    """The bench's board does not exist: without the up-front check this run would fail on
    the board (exit 1); with it, the unwritable --report is exit 2 first."""
    path = _bench(tmp_path, '[[board]]\nport = "/dev/does-not-exist"\n')
    report = tmp_path / "no-such-dir" / "report.json"
    proc = run_harness("hil", "run", "--bench", str(path), "--report", str(report), timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--report" in lines[0] and "not a directory" in lines[0]
