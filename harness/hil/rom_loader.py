"""The ESP32 ROM serial loader (no stub), answered well enough for esptool to flash a board.

One ``RomLoader`` per boot into download mode: ``handle(packet)`` takes one
SLIP payload and returns the SLIP payloads to send back. Register reads give an
ESP32-D0WD-V3 (revision v3.0) with the board's MAC in eFuse and a 40 MHz
crystal; the SPI0 "user command" registers run RDID/RDSFDP against a modelled
flash chip; FLASH_BEGIN/DATA, FLASH_DEFL_BEGIN/DATA/END, SPI_FLASH_MD5 and
READ_FLASH_SLOW work on the board's flash. Anything the ROM does not support
(GET_SECURITY_INFO on an ESP32, the stub's RAM upload) fails at once with an
error status, because silence costs esptool a 3 s timeout per try.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import HarnessInputError

# Opcodes (esptool's names).
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14

# ROM error codes (second status byte).
ERR_INVALID_MESSAGE = 0x05
ERR_FAILED = 0x06
ERR_BAD_CHECKSUM = 0x07
ERR_FLASH_WRITE = 0x08
ERR_FLASH_READ = 0x09
ERR_READ_LENGTH = 0x0A
ERR_DEFLATE = 0x0B

CHECKSUM_SEED = 0xEF
SYNC_VALUE = 0x20120707
SYNC_REPLIES = 8
READ_BLOCK = 64  # READ_FLASH_SLOW's limit per request

CHIP_DETECT_REG = 0x40001000
CHIP_DETECT_ESP32 = 0x00F01D83
EFUSE_BASE = 0x3FF5A000
APB_CTL_DATE_REG = 0x3FF6607C
UART_CLKDIV_REG = 0x3FF40014
UART_CLKDIV_40MHZ = 347  # at 115200 baud esptool reads this as a 40 MHz crystal

SPI_BASE = 0x3FF42000
SPI_CMD = SPI_BASE + 0x00
SPI_ADDR = SPI_BASE + 0x04
SPI_USR2 = SPI_BASE + 0x24
SPI_MISO_DLEN = SPI_BASE + 0x2C
SPI_W0 = SPI_BASE + 0x80
SPI_CMD_USR = 1 << 18

FLASH_MFG_WINBOND = 0xEF
FLASH_TYPE = 0x40
RDID = 0x9F
RDSFDP = 0x5A
# A small SFDP table: the signature esptool checks, then a JEDEC header.
SFDP_TABLE = b"SFDP\x06\x01\x00\xff" + b"\x00\x06\x01\x10\x30\x00\x00\xff" + b"\xef\x00\x01\x03"


def data_checksum(data: bytes, seed: int = CHECKSUM_SEED) -> int:
    """XOR of the bytes, seeded with 0xEF: what *_DATA requests carry."""
    acc = seed
    for b in data:
        acc ^= b
    return acc


def efuse_words(mac: bytes) -> dict[int, int]:
    """eFuse block 0 words for an ESP32-D0WD-V3 (major revision 3) with this MAC."""
    return {
        1: int.from_bytes(mac[2:6], "big"),
        2: int.from_bytes(mac[0:2], "big"),  # upper half would hold the MAC CRC
        3: (1 << 9) | (1 << 15),  # package D0WD (1); major-revision bit 0
        5: 1 << 20,  # major-revision bit 1; minor revision 0 (bits 24-25)
        6: 0,  # coding scheme: none
    }


class Flash:
    """The board's SPI flash: a bytearray, optionally mirrored to a file write by write."""

    def __init__(self, size: int, path: str | None = None) -> None:
        self.size = size
        self.path = path
        self.data = bytearray(b"\xff" * size)
        if path:
            try:
                with open(path, "rb") as f:
                    stored = f.read(size)
                self.data[: len(stored)] = stored
            except FileNotFoundError:
                self._create(path)
            except OSError as exc:
                raise HarnessInputError("flash", f"cannot read {path}: {exc.strerror}") from None

    def _create(self, path: str) -> None:
        try:
            with open(path, "wb") as f:
                f.write(self.data)
        except OSError as exc:
            raise HarnessInputError("flash", f"cannot create {path}: {exc.strerror}") from None

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def write(self, offset: int, chunk: bytes) -> None:
        if offset < 0 or offset + len(chunk) > self.size:
            raise ValueError(f"write 0x{offset:x}+{len(chunk)} beyond flash size 0x{self.size:x}")
        self.data[offset : offset + len(chunk)] = chunk
        if self.path:
            with open(self.path, "r+b") as f:
                f.seek(offset)
                f.write(chunk)

    def erase(self, offset: int, length: int) -> None:
        length = max(0, min(length, self.size - offset))
        self.write(offset, b"\xff" * length)


@dataclass
class _Download:
    """An open FLASH_BEGIN or FLASH_DEFL_BEGIN."""

    offset: int
    block_size: int
    compressed: bool
    written: int = 0
    inflater: zlib._Decompress | None = None  # type: ignore[name-defined]
    next_seq: int = 0


@dataclass
class RomLoader:
    """One download-mode session of the ESP32 ROM."""

    mac: bytes
    flash: Flash
    on_run: Callable[[bool], None] = lambda _reboot: None  # FLASH_END: leave the loader
    regs: dict[int, int] = field(default_factory=dict)
    _download: _Download | None = None
    commands: int = 0

    def __post_init__(self) -> None:
        self.regs[CHIP_DETECT_REG] = CHIP_DETECT_ESP32
        for word, value in efuse_words(self.mac).items():
            self.regs[EFUSE_BASE + 4 * word] = value
        self.regs[APB_CTL_DATE_REG] = 1 << 31  # major-revision bit 2
        self.regs[UART_CLKDIV_REG] = UART_CLKDIV_40MHZ

    # -- framing ----------------------------------------------------------------

    @staticmethod
    def _reply(op: int, value: int = 0, data: bytes = b"", error: int = 0) -> bytes:
        status = bytes([1 if error else 0, error, 0, 0])
        return struct.pack("<BBHI", 0x01, op, len(data) + len(status), value) + data + status

    def handle(self, packet: bytes) -> list[bytes]:
        """Answer one request packet (a SLIP payload)."""
        if len(packet) < 8 or packet[0] != 0x00:
            return []  # not a request: the ROM ignores it
        _, op, size, chk = struct.unpack_from("<BBHI", packet)
        data = packet[8 : 8 + size]
        self.commands += 1
        if len(data) != size:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        try:
            return self._dispatch(op, data, chk)
        except (struct.error, ValueError, IndexError):
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]

    def _dispatch(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if op == SYNC:
            return [self._reply(op, SYNC_VALUE)] * SYNC_REPLIES
        if op == READ_REG:
            (addr,) = struct.unpack_from("<I", data)
            return [self._reply(op, self.regs.get(addr, 0))]
        if op == WRITE_REG:
            self._write_regs(data)
            return [self._reply(op)]
        if op in (SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE):
            return [self._reply(op)]
        if op in (FLASH_BEGIN, FLASH_DEFL_BEGIN):
            return [self._begin(op, data)]
        if op in (FLASH_DATA, FLASH_DEFL_DATA):
            return [self._data(op, data, chk)]
        if op in (FLASH_END, FLASH_DEFL_END):
            return self._end(op, data)
        if op == SPI_FLASH_MD5:
            addr, length = struct.unpack_from("<II", data)
            if addr + length > self.flash.size:
                return [self._reply(op, error=ERR_FLASH_READ)]
            digest = hashlib.md5(self.flash.read(addr, length)).hexdigest().encode()
            return [self._reply(op, data=digest)]
        if op == READ_FLASH_SLOW:
            addr, length = struct.unpack_from("<II", data)
            if length > READ_BLOCK:
                return [self._reply(op, error=ERR_READ_LENGTH)]
            if addr + length > self.flash.size:
                return [self._reply(op, error=ERR_FLASH_READ)]
            # The ROM always answers a full 64-byte buffer; esptool keeps what it asked for.
            block = self.flash.read(addr, length).ljust(READ_BLOCK, b"\xff")
            return [self._reply(op, data=block)]
        # GET_SECURITY_INFO (not in the ESP32 ROM), MEM_* (stub upload: this ROM
        # model cannot run code), and anything unknown.
        return [self._reply(op, error=ERR_INVALID_MESSAGE)]

    # -- registers and the SPI flash chip ------------------------------------------

    def _write_regs(self, data: bytes) -> None:
        for i in range(0, len(data) - 15, 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            old = self.regs.get(addr, 0)
            self.regs[addr] = (old & ~mask) | (value & mask) if mask != 0xFFFFFFFF else value
            if addr == SPI_CMD and value & SPI_CMD_USR:
                self._spi_command()

    def _spi_command(self) -> None:
        command = self.regs.get(SPI_USR2, 0) & 0xFFFF
        miso_bytes = (self.regs.get(SPI_MISO_DLEN, 0) + 8) // 8
        addr = self.regs.get(SPI_ADDR, 0)
        if addr > 0xFFFFFF:
            addr >>= 8
        if command == RDID:
            capacity = self.flash.size.bit_length() - 1
            reply = bytes([FLASH_MFG_WINBOND, FLASH_TYPE, capacity])
        elif command == RDSFDP:
            reply = SFDP_TABLE[addr : addr + miso_bytes]
        else:  # status reads, reset enable/reset (0x66/0x99), anything else
            reply = b""
        reply = reply.ljust(4, b"\0")[: max(4, miso_bytes)]
        self.regs[SPI_W0] = int.from_bytes(reply[:4], "little")
        self.regs[SPI_CMD] = 0  # done at once

    # -- flashing ----------------------------------------------------------------

    def _begin(self, op: int, data: bytes) -> bytes:
        erase_size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if offset + erase_size > self.flash.size or block_size == 0:
            return self._reply(op, error=ERR_FAILED)
        self.flash.erase(offset, erase_size)
        inflater = zlib.decompressobj() if op == FLASH_DEFL_BEGIN else None
        self._download = _Download(offset, block_size, op == FLASH_DEFL_BEGIN, inflater=inflater)
        return self._reply(op)

    def _data(self, op: int, data: bytes, chk: int) -> bytes:
        dl = self._download
        if dl is None or dl.compressed != (op == FLASH_DEFL_DATA):
            return self._reply(op, error=ERR_FAILED)
        length, seq = struct.unpack_from("<II", data)
        payload = data[16 : 16 + length]
        if len(payload) != length:
            return self._reply(op, error=ERR_INVALID_MESSAGE)
        if data_checksum(payload) != chk & 0xFF:
            return self._reply(op, error=ERR_BAD_CHECKSUM)
        if dl.compressed:
            assert dl.inflater is not None
            try:
                chunk = dl.inflater.decompress(payload)
            except zlib.error:
                return self._reply(op, error=ERR_DEFLATE)
            start = dl.offset + dl.written
        else:
            chunk = payload
            start = dl.offset + seq * dl.block_size
        try:
            self.flash.write(start, chunk)
        except ValueError:
            return self._reply(op, error=ERR_FLASH_WRITE)
        dl.written += len(chunk)
        dl.next_seq = seq + 1
        return self._reply(op)

    def _end(self, op: int, data: bytes) -> list[bytes]:
        """FLASH_END/FLASH_DEFL_END leave the ROM loader: 0 reboots, 1 runs user code.

        Either way the app starts; esptool's ``run`` and ``--after soft-reset``
        use this, which is how a board on socket:// (no modem lines) can be
        sent from the loader into its app by esptool itself.
        """
        reboot = (struct.unpack_from("<I", data)[0] if len(data) >= 4 else 1) == 0
        self._download = None
        self.on_run(reboot)
        return [self._reply(op)]
