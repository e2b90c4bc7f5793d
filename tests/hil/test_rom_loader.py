"""The ROM loader's answers to what esptool never sends: bad checksums, junk, unsupported ops."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from harness.hil.rom_loader import (
    ERR_BAD_CHECKSUM,
    ERR_INVALID_MESSAGE,
    ERR_READ_LENGTH,
    FLASH_BEGIN,
    FLASH_DATA,
    GET_SECURITY_INFO,
    MEM_BEGIN,
    READ_FLASH_SLOW,
    SYNC,
    data_checksum,
)
from harness.hil.slip import SlipDecoder, slip_encode
from harness.hil.virtual_board import VirtualBoard


class Link:
    """Raw SLIP over the board's TCP port: requests in, (op, value, data, status) out."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("socket://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=3)
        self.slip = SlipDecoder()
        self.pending: list[bytes] = []

    def send(self, op: int, data: bytes = b"", chk: int = 0, raw_prefix: bytes = b"") -> None:
        packet = struct.pack("<BBHI", 0, op, len(data), chk) + data
        self.sock.sendall(raw_prefix + slip_encode(packet))

    def reply(self) -> tuple[int, int, bytes, bytes]:
        while not self.pending:
            self.pending += self.slip.feed(self.sock.recv(4096))
        pkt = self.pending.pop(0)
        direction, op, size, value = struct.unpack_from("<BBHI", pkt)
        assert direction == 1
        body = pkt[8 : 8 + size]
        return op, value, body[:-4], body[-4:]


@pytest.fixture
def link() -> Iterator[Link]:
    with VirtualBoard(mac="24:0a:c4:01:02:03") as board:
        lk = Link(board.url)
        yield lk
        lk.sock.close()


def test_sync_gets_eight_replies_even_after_junk(link: Link) -> None:
    sync = b"\x07\x07\x12\x20" + b"\x55" * 32
    link.send(SYNC, sync, raw_prefix=b"garbage before the frame\r\n")
    replies = [link.reply() for _ in range(8)]
    assert all(
        op == SYNC and value != 0 and status[:2] == b"\0\0" for op, value, _, status in replies
    )


def test_flash_data_with_a_bad_checksum_is_refused(link: Link) -> None:
    link.send(FLASH_BEGIN, struct.pack("<IIII", 0x1000, 1, 0x400, 0x20000))
    assert link.reply()[3][:2] == b"\0\0"
    payload = bytes(range(256)) * 4
    header = struct.pack("<IIII", len(payload), 0, 0, 0)
    link.send(FLASH_DATA, header + payload, chk=data_checksum(payload) ^ 0x01)
    op, _, _, status = link.reply()
    assert op == FLASH_DATA and status[:2] == bytes([1, ERR_BAD_CHECKSUM])
    link.send(FLASH_DATA, header + payload, chk=data_checksum(payload))
    assert link.reply()[3][:2] == b"\0\0"
    link.send(READ_FLASH_SLOW, struct.pack("<II", 0x20000 + 64, 64))
    _, _, data, status = link.reply()
    assert status[:2] == b"\0\0" and data == payload[64:128]
    link.send(READ_FLASH_SLOW, struct.pack("<II", 0x20000, 65))
    assert link.reply()[3][:2] == bytes([1, ERR_READ_LENGTH])


@pytest.mark.parametrize("op", [GET_SECURITY_INFO, MEM_BEGIN, 0x7F])
def test_unsupported_ops_fail_at_once(link: Link, op: int) -> None:
    link.send(op, b"\0" * 16)
    got, _, _, status = link.reply()
    assert got == op and status[:2] == bytes([1, ERR_INVALID_MESSAGE])
