"""Flash an app image onto a board with esptool, unless it already runs that image.

Order, and why:

1. Validate the image file (magic, segments, checksum, SHA-256 digest, app
   descriptor) ourselves: ``esptool image-info`` exits 0 on a corrupted image.
2. Connect once through esptool's library API (one reset into the ROM loader,
   not one per step) and read the 32 bytes at app offset + 0xB0: the running
   image's ``app_elf_sha256``. Equal to the new image's -> skip (unless
   ``force``), the same rule pytest-embedded uses.
3. Otherwise ``write_flash`` (compressed by default), then ``verify_flash``
   (MD5 of the flash region against the file), then reset as asked.

For virtual boards on ``socket://`` (no modem lines) pass ``before="no-reset",
after="no-reset"`` and leave the stub off (the ROM model cannot run code).
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.errors import HarnessInputError
from harness.hil.image import (
    ELF_SHA256_LEN,
    ELF_SHA256_OFFSET,
    AppImage,
    elf_sha256_at,
    validate_image,
)

ROM_BAUD = 115200
BEFORE_CHOICES = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER_CHOICES = ("hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset")


class _PerThreadStream(io.TextIOBase):
    """What ``sys.stdout``/``sys.stderr`` are while boards flash.

    esptool's logger prints to the process's ``sys.stdout``. Swapping it per
    flash would make one board's flash capture another's output, so boards could
    only flash one at a time. Instead, while any flash runs, both streams are
    replaced by this router: a flashing thread's writes go to its own buffer,
    every other thread's to the stream that was there before.
    """

    def __init__(self, fallback: TextIO) -> None:
        super().__init__()
        self.fallback = fallback

    def write(self, text: str) -> int:
        buffer: io.StringIO | None = getattr(_capture, "buffer", None)
        return (buffer if buffer is not None else self.fallback).write(text)

    def flush(self) -> None:
        if getattr(_capture, "buffer", None) is None:
            self.fallback.flush()

    def isatty(self) -> bool:  # a flash's own buffer is no terminal; others see theirs
        return getattr(_capture, "buffer", None) is None and self.fallback.isatty()


_capture = threading.local()
_capture_lock = threading.Lock()
_capturing = 0  # flashes in progress (the routers are installed while > 0)


@contextlib.contextmanager
def _captured(out: io.StringIO) -> Iterator[None]:
    """Route this thread's stdout and stderr into ``out`` (other threads are untouched)."""
    global _capturing
    with _capture_lock:
        if _capturing == 0:
            sys.stdout = _PerThreadStream(sys.stdout)
            sys.stderr = _PerThreadStream(sys.stderr)
        _capturing += 1
    _capture.buffer = out
    try:
        yield
    finally:
        _capture.buffer = None
        with _capture_lock:
            _capturing -= 1
            if _capturing == 0:
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _PerThreadStream):
                        setattr(sys, name, stream.fallback)


class FlashError(RuntimeError):
    """esptool failed after connecting: the board, not the input, is the problem."""


@dataclass(frozen=True)
class FlashResult:
    port: str
    image: AppImage
    offset: int
    skipped: bool
    board_elf_sha256: str  # what the board had before ("" for blank flash)
    seconds: float
    esptool_log: str

    def summary(self) -> str:
        what = f"{self.image.project} {self.image.version}"
        if self.skipped:
            return (
                f"{self.port}: already runs {what} (ELF SHA-256 {self.image.elf_sha256[:12]}...),"
                " not flashed"
            )
        return (
            f"{self.port}: flashed {what} ({self.image.size} bytes) at 0x{self.offset:x},"
            f" verified, in {self.seconds:.1f} s"
        )


def parse_offset(text: str | int) -> int:
    if isinstance(text, int):
        value = text
    else:
        try:
            value = int(text, 0)
        except ValueError:
            raise HarnessInputError("offset", f"{text!r} is not a number (e.g. 0x10000)") from None
    if value < 0 or value % 0x1000:
        raise HarnessInputError("offset", f"0x{value:x} must be a non-negative multiple of 0x1000")
    return value


def check_port_reachable(port: str) -> None:
    """Open and close the port once, so an absent board is one clear line, not a traceback."""
    import serial

    try:
        ser = serial.serial_for_url(port, baudrate=ROM_BAUD, timeout=0.5, do_not_open=True)
        # Do not toggle DTR/RTS just by looking: that would reset a real dev board.
        ser.dtr = False
        ser.rts = False
        ser.open()
        ser.close()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise HarnessInputError("port", f"{port}: cannot open ({exc})") from None


def flash_board(
    port: str,
    image_path: str | Path,
    offset: int | str = 0x10000,
    *,
    baud: int = ROM_BAUD,
    stub: bool = False,
    force: bool = False,
    before: str = "default-reset",
    after: str = "hard-reset",
    compress: bool = True,
) -> FlashResult:
    """Validate, compare, and flash if needed. Bad image or port: HarnessInputError."""
    image = validate_image(image_path)
    where = parse_offset(offset)
    if before not in BEFORE_CHOICES:
        raise HarnessInputError("before", f"{before!r}: one of {', '.join(BEFORE_CHOICES)}")
    if after not in AFTER_CHOICES:
        raise HarnessInputError("after", f"{after!r}: one of {', '.join(AFTER_CHOICES)}")
    check_port_reachable(port)
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        read_flash,
        reset_chip,
        verify_flash,
        write_flash,
    )
    from esptool.util import FatalError

    out = io.StringIO()
    t0 = time.monotonic()
    board_sha = ""
    skipped = False
    try:
        with _captured(out):
            esp = detect_chip(port, ROM_BAUD, before, connect_attempts=3)
            try:
                if esp.CHIP_NAME != "ESP32":
                    raise FlashError(f"{port}: board is an {esp.CHIP_NAME}, not an ESP32")
                if stub:
                    esp = esp.run_stub()
                if baud != ROM_BAUD:
                    esp.change_baud(baud)
                attach_flash(esp)
                raw = read_flash(esp, where + ELF_SHA256_OFFSET, ELF_SHA256_LEN, no_progress=True)
                board_sha = elf_sha256_at(raw or b"")
                skipped = board_sha == image.elf_sha256 and not force
                if not skipped:
                    data = Path(image_path).read_bytes()
                    write_flash(esp, [(where, data)], compress=compress, no_compress=not compress)
                    verify_flash(esp, [(where, data)])
                reset_chip(esp, after)
            finally:
                esp._port.close()
    except FlashError:
        raise
    except FatalError as exc:
        raise FlashError(f"{port}: esptool: {exc}") from None
    except OSError as exc:
        raise FlashError(f"{port}: {exc}") from None
    return FlashResult(
        port, image, where, skipped, board_sha, time.monotonic() - t0, out.getvalue()
    )
