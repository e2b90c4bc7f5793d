"""The claim-probe line protocol: framed, checksummed replies that logs cannot imitate.

A frame is one line: ``@CP1 <compact JSON> *<crc32 of the JSON, 8 lower-case hex>``,
ended by ``\\n`` (``\\r\\n`` from a board is fine). The board keeps printing
ESP-IDF log lines (``I (1234) tag: ...``) around and even between frames; the
decoder finds the ``@CP1 `` marker anywhere in a line, so a log line that lost
its newline does not hide the frame after it. A line with the marker whose JSON
or CRC is broken is counted as a bad frame, never returned as data.

Host -> board: ``{"id": N, "cmd": "identity" | "sign" | "claim" | "ping", ...}``.
Board -> host: ``{"id": N, "ok": true, ...}`` or ``{"id": N, "ok": false, "error": "..."}``,
and unsolicited events ``{"event": "boot" | "image_error" | ..., ...}``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

MARKER = b"@CP1 "
MAX_LINE = 4096


def encode_frame(payload: dict[str, Any]) -> bytes:
    """One frame line, newline included."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return MARKER + body + b" *" + f"{zlib.crc32(body):08x}".encode() + b"\n"


@dataclass(frozen=True, slots=True)
class Frame:
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LogLine:
    text: str


@dataclass(slots=True)
class FrameDecoder:
    """Split a byte stream into frames and log lines, counting what had to be skipped."""

    bad_frames: int = 0
    garbage_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Frame | LogLine]:
        self._buf += data
        out: list[Frame | LogLine] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:  # a line that never ends is noise
                    self.garbage_bytes += len(self._buf)
                    self._buf.clear()
                return out
            line = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            out.extend(self._line(line))

    def _line(self, line: bytes) -> list[Frame | LogLine]:
        at = line.find(MARKER)
        if at < 0:
            return [self._log(line)] if line else []
        items: list[Frame | LogLine] = []
        if at > 0:
            items.append(self._log(line[:at]))
        frame = self._parse(line[at + len(MARKER) :])
        if frame is None:
            self.bad_frames += 1
        else:
            items.append(frame)
        return items

    def _log(self, raw: bytes) -> LogLine:
        text = raw.decode("utf-8", errors="replace")
        kept = "".join(ch for ch in text if (ch.isprintable() and ch != "\ufffd") or ch == "\t")
        self.garbage_bytes += len(text) - len(kept)
        return LogLine(kept)

    @staticmethod
    def _parse(rest: bytes) -> Frame | None:
        star = rest.rfind(b" *")
        if star < 0 or len(rest) - star - 2 != 8:
            return None
        body, crc = rest[:star], rest[star + 2 :]
        try:
            if int(crc, 16) != zlib.crc32(body):
                return None
            payload = json.loads(body)
        except ValueError:
            return None
        return Frame(payload) if isinstance(payload, dict) else None
