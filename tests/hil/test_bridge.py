"""The serial bridge over a real socket:// port: frames vs logs, junk, timeouts, reconnects."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.hil.board_errors import BoardGone, BoardImageError, BoardState, BoardTimeout
from harness.hil.board_link import carries_modem_lines
from harness.hil.board_pool import BoardPool
from harness.hil.bridge import SerialBoard
from harness.hil.frames import encode_frame
from harness.protocol import derive_oob_v5, sign_claim

from .conftest import FramePeer

NONCE = "00112233445566778899aabbccddeeff"


def _wait(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_sign_reply_matches_python_core_and_logs_are_kept_apart(
    frame_peer: FramePeer, tmp_path: Path
) -> None:
    with SerialBoard(frame_peer.url, name="b1", log_dir=tmp_path) as board:
        board.wait_ready(timeout=3)
        reply = board.request("sign", child_id="Child-1", nonce=NONCE)
        assert board.state is BoardState.RUNNING
        assert "I (99) sign: ok" in board.tail
    oob = bytes.fromhex(derive_oob_v5("CCDBA795BAA4"))
    assert reply["hmac_hex"] == sign_claim("CCDBA795BAA4", "Child-1", NONCE, oob, "legacy")
    log = (tmp_path / "b1.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z log +I \(99\) sign: ok$", log, re.M)
    assert reply["hmac_hex"] not in log and NONCE not in log, "secrets must be scrubbed"
    assert " rx " in log and " tx " in log


def test_garbage_and_half_frames_are_skipped_and_counted(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url) as board:
        board.wait_ready(timeout=3)
        half = encode_frame({"id": 999, "ok": True})[:12]
        corrupt = encode_frame({"id": 998, "ok": True}).replace(b"998", b"997")
        frame_peer.inject(b"\x00\xff\xfe\x01junk" + half + b"\n" + corrupt + b"I (5) x: fine\n")
        _wait(lambda: "I (5) x: fine" in board.tail)
        assert board.bad_frames == 2
        assert board.garbage_bytes >= 4
        assert board.identity()["device_id"] == "CCDBA795BAA4"


def test_timeout_names_what_was_awaited_and_shows_last_logs(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url, name="quiet") as board:
        board.wait_ready(timeout=3)
        frame_peer.silent = True
        frame_peer.inject(b"I (10) claim_probe: busy\n")
        _wait(lambda: "I (10) claim_probe: busy" in board.tail)
        with pytest.raises(BoardTimeout) as err:
            board.request("identity", timeout=0.4)
    msg = str(err.value)
    assert "quiet: no reply to 'identity'" in msg and "0.4 s" in msg
    assert "I (10) claim_probe: busy" in msg


def test_port_that_vanishes_and_returns_is_reopened_and_counted(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url, reconnect_window=10) as board:
        board.wait_ready(timeout=3)
        frame_peer.unplug()
        _wait(lambda: board.state is BoardState.RECONNECTING)
        time.sleep(0.3)  # a few failed reopen attempts
        frame_peer.replug()
        # Sent during or after the outage, the request is answered once the port is back.
        assert board.request("sign", child_id="c", nonce=NONCE, timeout=5)["ok"] is True
        assert board.reconnects == 1
        assert board.stats()["reconnects"] == 1


def test_port_that_never_returns_fails_requests_with_board_gone(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url, reconnect_window=0.5) as board:
        board.wait_ready(timeout=3)
        frame_peer.unplug()
        _wait(lambda: board.state is BoardState.GONE, timeout=5)
        with pytest.raises(BoardGone, match="did not come back"):
            board.ping(timeout=1)


def test_rom_boot_loop_is_reported_as_image_error(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url) as board:
        board.wait_ready(timeout=3)
        rom = b"rst:0x10 (RTCWDT_RTC_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\ninvalid header\n"
        frame_peer.inject(rom * 3)
        _wait(lambda: board.state is BoardState.IMAGE_ERROR)
        with pytest.raises(BoardImageError, match="boot loop"):
            board.identity(timeout=1)


def test_image_error_event_is_reported(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url) as board:
        board.wait_ready(timeout=3)
        frame_peer.inject(encode_frame({"event": "image_error", "error": "bad checksum"}))
        _wait(lambda: board.state is BoardState.IMAGE_ERROR)
        assert board.image_error == "image error: bad checksum"


def test_pool_drives_boards_in_parallel_and_keeps_failures_per_board() -> None:
    peers = [FramePeer(device_id=f"AABBCCDDEE{i:02X}") for i in range(3)]
    peers[2].silent = True
    try:
        boards = [SerialBoard(p.url, name=f"b{i}", timeout=0.5) for i, p in enumerate(peers)]
        with BoardPool(boards) as pool:
            out = pool.map(lambda b: b.identity()["device_id"])
    finally:
        for p in peers:
            p.close()
    assert [o.value for o in out[:2]] == ["AABBCCDDEE00", "AABBCCDDEE01"]
    assert isinstance(out[2].error, BoardTimeout)


def test_modem_lines_exist_only_where_the_transport_carries_them() -> None:
    assert not carries_modem_lines("socket://127.0.0.1:1")
    assert carries_modem_lines("rfc2217://127.0.0.1:1")
    assert carries_modem_lines("/dev/ttyUSB0")


def test_expect_follows_the_console_in_order_and_times_out_cleanly(frame_peer: FramePeer) -> None:
    with SerialBoard(frame_peer.url, name="exp") as board:
        board.wait_ready(timeout=3)
        frame_peer.inject(b"I (1) app: step one\nI (2) app: step two\nI (3) app: step one\n")
        assert board.expect(r"step (\w+)", timeout=2).group(1) == "one"
        assert board.expect(r"step (\w+)", timeout=2).group(1) == "two"
        assert board.expect(r"step one", timeout=2).group(0) == "step one"
        with pytest.raises(BoardTimeout, match="exp: no log line matching 'step one'"):
            board.expect("step one", timeout=0.3)
