"""The per-board log file the bridge writes: timestamped lines, secrets scrubbed.

Both halves of a board write to it (the link logs what it sends and its port
events, the board logs what it receives), so it lives on its own.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from harness.masking import scrub


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class BoardLog:
    """A timestamped per-board log file; every line passes through ``scrub`` first."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, text: str) -> None:
        if self._fh is None:
            return
        with self._lock:
            if self._fh is not None:
                self._fh.write(f"{_now()} {kind:<5} {scrub(text)}\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
