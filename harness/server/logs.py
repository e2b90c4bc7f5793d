"""One structured JSON line per request, with identifiers and secrets masked.

Fields are masked where they are added (``mask_id``/``mask_secret``) and the
finished line passes through ``scrub`` as well, so a value that slips into a
free-text field (an error message, a header) is still caught.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

from harness.errors import HarnessInputError
from harness.masking import scrub


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RequestLog:
    """Writes JSON lines to a file (line-buffered), to stderr (``"-"``) or nowhere (None)."""

    def __init__(self, target: str | None) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._fh: IO[str] | None
        self._owns = False
        if target is None:
            self._fh = None
        elif target == "-":
            self._fh = sys.stderr
        else:
            try:
                self._fh = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as exc:
                raise HarnessInputError(
                    "--log-file", f"cannot open {target}: {exc.strerror}"
                ) from None
            self._owns = True

    @property
    def enabled(self) -> bool:
        return self._fh is not None

    def write(self, event: str, **fields: Any) -> None:
        if self._fh is None:
            return
        record = {"ts": _now_iso(), "event": event, **fields}
        line = scrub(json.dumps(record, separators=(",", ":"), default=str))
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None and self._owns:
                self._fh.close()
            self._fh = None


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
