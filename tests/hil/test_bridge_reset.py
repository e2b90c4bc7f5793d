"""The bridge's classic DTR/RTS reset, over RFC 2217 into a virtual board's auto-reset circuit."""

from __future__ import annotations

import time
from pathlib import Path

from firmware_fixtures.images import fixture_path
from harness.hil.board_errors import BoardState
from harness.hil.bridge import SerialBoard
from harness.hil.virtual_board import VirtualBoard

APP_OFFSET = 0x10000


def _flash_file(tmp_path: Path) -> Path:
    image = fixture_path("5.1.0").read_bytes()
    flash = bytearray(b"\xff" * (4 << 20))
    flash[APP_OFFSET : APP_OFFSET + len(image)] = image
    path = tmp_path / "flash.bin"
    path.write_bytes(bytes(flash))
    return path


def test_dtr_rts_sequences_select_download_and_run_mode(tmp_path: Path) -> None:
    with VirtualBoard(
        mac="24:0A:C4:AB:CD:EF", flash_path=_flash_file(tmp_path), listen="rfc2217://127.0.0.1:0"
    ) as vb:
        assert vb.wait_mode("download")  # powered up with IO0 low, like a fresh board
        powered = vb.boots
        with SerialBoard(vb.url, name="rfc") as board:
            time.sleep(0.3)  # long enough for a reset that opening the port might cause
            assert vb.mode == "download" and vb.boots == powered, "opening must not reset"
            board.reset_and_wait(timeout=10)  # the run-mode pulse; no frame command involved
            assert vb.mode == "run" and board.boots == 1
            assert board.state is BoardState.RUNNING
            assert board.identity()["fw"] == "5.1.0"

            board.reset(download=True)
            assert vb.wait_mode("download")

            board.reset(download=False)
            assert vb.wait_mode("run")
            assert board.identity(timeout=5)["hmac_mode"] == "normalized"
