"""``harness hil flash``: validate, skip a board that already runs the image, flash and verify."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_fixtures.images import ImageSpec, build_image, corrupt_image, fixture_path
from harness.errors import HarnessInputError
from harness.hil.flash import flash_board
from harness.hil.image import read_app_image
from harness.hil.virtual_board import APP_OFFSET, VirtualBoard
from tests.support import free_port, run_harness

NO_RESET = {"before": "no-reset", "after": "no-reset"}


@pytest.fixture
def board() -> Iterator[VirtualBoard]:
    with VirtualBoard(mac="24:0a:c4:aa:bb:cc") as b:
        yield b


def test_flash_then_skip_then_force(board: VirtualBoard) -> None:
    image = fixture_path("5.0.3")
    first = flash_board(board.url, image, **NO_RESET)
    assert not first.skipped and first.board_elf_sha256 == ""  # blank flash before
    on_board = read_app_image(board.flash.read(APP_OFFSET, 8192))
    assert on_board.valid and on_board.version == "5.0.3"
    again = flash_board(board.url, image, **NO_RESET)
    assert again.skipped and again.board_elf_sha256 == first.image.elf_sha256
    assert "not flashed" in again.summary()
    board.flash.write(APP_OFFSET + 0x200, b"\x00" * 16)  # damage outside the descriptor
    forced = flash_board(board.url, image, force=True, **NO_RESET)
    assert not forced.skipped
    assert board.flash.read(APP_OFFSET, image.stat().st_size) == image.read_bytes()
    newer = flash_board(board.url, fixture_path("5.1.0"), compress=False, **NO_RESET)
    assert not newer.skipped and newer.board_elf_sha256 == first.image.elf_sha256


def test_cli_flashes_skips_and_refuses_bad_input(board: VirtualBoard, tmp_path: Path) -> None:
    image = str(fixture_path("5.1.0"))
    first = run_harness("hil", "flash", "--port", board.url, "--image", image)
    assert first.returncode == 0, first.stderr
    assert "flashed claim_probe 5.1.0" in first.stdout
    second = run_harness("hil", "flash", "--port", board.url, "--image", image)
    assert second.returncode == 0 and "already runs claim_probe 5.1.0" in second.stdout

    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt_image(build_image(ImageSpec("5.2.0")), "digest"))
    refused = run_harness("hil", "flash", "--port", board.url, "--image", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "bad.bin" in refused.stderr
    assert "hash" in refused.stderr and "Traceback" not in refused.stderr
    # The board was not touched.
    assert read_app_image(board.flash.read(APP_OFFSET, 8192)).version == "5.1.0"

    gone = run_harness(
        "hil", "flash", "--port", f"socket://127.0.0.1:{free_port()}", "--image", image
    )
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and "port" in gone.stderr

    offset = run_harness("hil", "flash", "--port", board.url, "--image", image, "--offset", "0x123")
    assert offset.returncode == 2 and "offset" in offset.stderr


@pytest.mark.parametrize(
    ("how", "reason"),
    [("checksum", "Checksum failed"), ("magic", "invalid magic"), ("truncate", "beyond end")],
)
def test_bad_images_never_reach_the_port(tmp_path: Path, how: str, reason: str) -> None:
    bad = tmp_path / "app.bin"
    bad.write_bytes(corrupt_image(build_image(ImageSpec("5.0.3")), how))  # type: ignore[arg-type]
    # The port does not exist: validation must fail first, naming the image.
    with pytest.raises(HarnessInputError, match=reason):
        flash_board(f"socket://127.0.0.1:{free_port()}", bad)


def test_boards_flash_in_parallel_each_with_its_own_esptool_log() -> None:
    """Three boards flashed from three threads at once: each flash lands and verifies, and
    each result's esptool log is that board's own (the capture is per thread)."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    macs = ["24:0a:c4:00:00:01", "24:0a:c4:00:00:02", "24:0a:c4:00:00:03"]
    before = sys.stdout, sys.stderr
    with contextlib.ExitStack() as stack:
        boards = [stack.enter_context(VirtualBoard(mac=mac)) for mac in macs]
        image = fixture_path("5.1.0")
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(lambda bd: flash_board(bd.url, image, **NO_RESET), boards))
        for board, result in zip(boards, results, strict=True):
            assert not result.skipped
            assert board.flash.read(APP_OFFSET, image.stat().st_size) == image.read_bytes()
            log = result.esptool_log
            assert log.count("Verification successful") == 1, log
            assert f"{board.url}:" in log  # esptool names the port it talks to
            assert not any(f"{other.url}:" in log for other in boards if other is not board)
    assert (sys.stdout, sys.stderr) == before  # the routers are gone once no flash runs
