"""SLIP framing as the ESP32 ROM loader uses it (0xC0 delimits, 0xDB escapes)."""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD
MAX_FRAME = 0x5000  # biggest loader packet is a 16 KiB stub block; ROM blocks are 1 KiB


def slip_encode(payload: bytes) -> bytes:
    """One frame, both delimiters included."""
    body = payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class SlipDecoder:
    """Turns a byte stream into SLIP payloads; bytes outside frames are dropped, as the ROM does."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._escape = False
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for byte in data:
            if not self._in_frame:
                if byte == END:
                    self._in_frame = True
                    self._buf.clear()
                else:
                    self.dropped += 1
                continue
            if self._escape:
                self._escape = False
                self._buf.append({ESC_END: END, ESC_ESC: ESC}.get(byte, byte))
            elif byte == ESC:
                self._escape = True
            elif byte == END:
                if self._buf:
                    out.append(bytes(self._buf))
                    self._buf.clear()
                    self._in_frame = False
                # an empty frame is a leading delimiter: stay in the frame
            else:
                self._buf.append(byte)
                if len(self._buf) > MAX_FRAME:
                    self.dropped += len(self._buf)
                    self._buf.clear()
                    self._in_frame = False
        return out
