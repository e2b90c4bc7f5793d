"""The per-board log file the bridge writes: timestamped lines, secrets scrubbed.

Both halves of a board write to it (the link logs what it sends and its port
events, the board logs what it receives), so it lives on its own.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from harness.masking import scrub, scrub_serial


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class BoardLog:
    """A timestamped per-board log file; every line is masked first (``scrub``, and
    ``scrub_serial`` for what the board printed)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, text: str) -> None:
        """One line; ``log`` lines are what the board printed (its firmware's serial shapes)."""
        if self._fh is None:
            return
        masked = scrub_serial(text) if kind == "log" else scrub(text)
        with self._lock:
            if self._fh is not None:
                self._fh.write(f"{_now()} {kind:<5} {masked}\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
