"""A noisy serial line between the bridge and a real virtual board: junk is skipped and counted."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_fixtures.images import fixture_path
from harness.hil.bridge import SerialBoard
from harness.hil.virtual_board import VirtualBoard
from harness.protocol import derive_oob_v5, sign_claim

APP_OFFSET = 0x10000
JUNK = b"\x00\xff\xfe\x1b[2J"  # line noise, no newline: it lands in front of the next line
HALF_FRAME = b'@CP1 {"id":77,"ok":tr\n'  # a frame cut off by the noise burst


class NoisyLine:
    """A TCP relay that adds a noise burst and a half frame after every few board lines."""

    def __init__(self, upstream: str, every: int = 3) -> None:
        host, port = upstream.removeprefix("socket://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.every = every
        self.bursts = 0
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._srv.getsockname()[1]}"
        self._socks: list[socket.socket] = [self._srv]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            host_side, _ = self._srv.accept()
            board_side = socket.create_connection(self.upstream)
            self._socks += [host_side, board_side]
            threading.Thread(target=self._pump, args=(host_side, board_side, False)).start()
            self._pump(board_side, host_side, True)

    def _pump(self, src: socket.socket, dst: socket.socket, noisy: bool) -> None:
        lines = 0
        with contextlib.suppress(OSError):
            while data := src.recv(4096):
                if not noisy:
                    dst.sendall(data)
                    continue
                for chunk in data.splitlines(keepends=True):
                    dst.sendall(chunk)
                    if chunk.endswith(b"\n"):
                        lines += 1
                        if lines % self.every == 0:
                            dst.sendall(JUNK + HALF_FRAME + JUNK)
                            self.bursts += 1

    def close(self) -> None:
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def noisy_line(tmp_path: Path) -> Iterator[NoisyLine]:
    image = fixture_path("5.0.3").read_bytes()
    flash = bytearray(b"\xff" * (4 << 20))
    flash[APP_OFFSET : APP_OFFSET + len(image)] = image
    (tmp_path / "flash.bin").write_bytes(bytes(flash))
    with VirtualBoard(mac="24:0A:C4:AB:CD:EF", flash_path=tmp_path / "flash.bin", boot=True) as vb:
        line = NoisyLine(vb.url)
        yield line
        line.close()


def test_requests_survive_junk_and_half_frames_which_are_counted(
    noisy_line: NoisyLine,
) -> None:
    line = noisy_line
    nonce = "ab" * 16
    with SerialBoard(line.url, name="noisy") as board:
        board.wait_ready(timeout=5)
        device_id = board.identity()["device_id"]
        oob = bytes.fromhex(derive_oob_v5(device_id))
        for i in range(6):
            child = f"Child-{i}"
            reply = board.request("sign", child_id=child, nonce=nonce)
            assert reply["hmac_hex"] == sign_claim(device_id, child, nonce, oob, "legacy")
        sent = line.bursts
        assert sent >= 3
        board.ping()  # its reply follows every burst sent before it on the line
        assert sent <= board.bad_frames <= line.bursts  # every half frame, nothing else
        assert board.garbage_bytes >= 4 * sent  # 4 unprintable bytes in each JUNK
        assert not any("\x00" in t or "\x1b" in t for t in board.tail)
