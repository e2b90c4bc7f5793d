"""Shared HIL fixtures: a small frame-speaking socket peer for the bridge's line-level tests.

No physical board exists here. The bench, run, compare and plugin tests use the
real virtual board; this peer exists only for what the bridge must survive on
the wire that a well-behaved board never sends on purpose (junk between frames,
half frames, a ROM boot loop, silence), byte for byte under the test's control.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.hil.frames import Frame, FrameDecoder, encode_frame
from harness.protocol import derive_oob_v5, sign_claim


class FramePeer:
    """A TCP server answering claim-probe frames as the firmware would, one client at a time."""

    def __init__(self, device_id: str = "CCDBA795BAA4", mode: str = "legacy") -> None:
        self.device_id = device_id
        self.mode = mode
        self.silent = False
        self.received: list[dict[str, Any]] = []
        self._lsock: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", self.port))
        lsock.listen(1)
        self.port = lsock.getsockname()[1]
        self._lsock = lsock
        threading.Thread(target=self._accept_loop, args=(lsock,), daemon=True).start()

    def _accept_loop(self, lsock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            with self._lock:
                self._conn = conn
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        dec = FrameDecoder()
        with contextlib.suppress(OSError):
            conn.sendall(b"I (10) claim_probe: up\n" + encode_frame({"event": "boot"}))
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for item in dec.feed(data):
                    if isinstance(item, Frame):
                        self.received.append(item.payload)
                        if not self.silent:
                            conn.sendall(self.answer(item.payload))

    def answer(self, req: dict[str, Any]) -> bytes:
        rid, cmd = req.get("id"), req.get("cmd")
        if cmd == "ping":
            return encode_frame({"id": rid, "ok": True})
        if cmd == "identity":
            return encode_frame(
                {"id": rid, "ok": True, "device_id": self.device_id, "hmac_mode": self.mode}
            )
        if cmd == "sign":
            oob = bytes.fromhex(derive_oob_v5(self.device_id))
            mac = sign_claim(self.device_id, req["child_id"], req["nonce"], oob, self.mode)  # type: ignore[arg-type]
            return b"I (99) sign: ok\n" + encode_frame(
                {"id": rid, "ok": True, "device_id": self.device_id, "hmac_hex": mac}
            )
        return encode_frame({"id": rid, "ok": False, "error": f"unknown command {cmd}"})

    def inject(self, raw: bytes) -> None:
        """Write raw bytes to the connected client (junk, half frames, ROM lines)."""
        with self._lock:
            assert self._conn is not None, "no client connected"
            self._conn.sendall(raw)

    def unplug(self) -> None:
        """Close the connection and stop listening: the port is gone."""
        with self._lock:
            for sock in (self._conn, self._lsock):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._conn = self._lsock = None

    def replug(self) -> None:
        """Listen again on the same port: the port came back."""
        self._listen()

    def close(self) -> None:
        self._stop.set()
        self.unplug()


@pytest.fixture
def frame_peer() -> Iterator[FramePeer]:
    peer = FramePeer()
    yield peer
    peer.close()


def write_bench(
    path: Path,
    versions: list[str | None],
    *,
    flags: dict[str, bool] | None = None,
    bench: str = "",
    extra: dict[int, str] | None = None,
) -> Path:
    """A bench of virtual boards ``v0..vN`` flashed with the fixture image of each version.

    A version of None gives a board without an image (blank flash).

    MACs carry hex letters, so the device IDs differ from their lower-case form
    (legacy and normalised signing then give different HMACs).
    """
    from firmware_fixtures.images import fixture_path

    lines = ["[bench]", "children = ['child-1', 'Child-Two']", bench, "[flags]"]
    lines += [f"{name} = {str(value).lower()}" for name, value in (flags or {}).items()]
    for i, version in enumerate(versions):
        lines += [
            "[[board]]",
            f"name = 'v{i}'",
            "virtual = true",
            f"mac = '24:0A:C4:AB:CD:{i:02X}'",
            f"image = '{fixture_path(version)}'" if version else "",
            (extra or {}).get(i, ""),
        ]
    path.write_text("\n".join(lines) + "\n")
    return path
