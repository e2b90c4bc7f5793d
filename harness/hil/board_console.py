"""What a board printed: the last few lines for error messages, the rest for ``expect``.

Log lines arrive on the link's reader thread and are waited for on the caller's;
:class:`BoardConsole` keeps them under the board's condition so ``expect`` wakes
as soon as a line lands, and follows pytest-embedded's cursor semantics.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque

from harness.hil.board_errors import BoardTimeout
from harness.hil.board_log import BoardLog
from harness.masking import scrub_serial

LOG_TAIL = 20
EXPECT_BUFFER = 5000  # log lines kept for expect()


class BoardConsole:
    """A board's log lines: ``tail`` (scrubbed) for errors, a numbered buffer for ``expect``."""

    def __init__(self, name: str, cond: threading.Condition, log: BoardLog) -> None:
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._name = name
        self._cond = cond
        self._log = log
        self._lines: deque[tuple[int, str]] = deque(maxlen=EXPECT_BUFFER)
        self._line_seq = 0
        self._expect_from = 0

    def add(self, text: str) -> None:
        """Record one line (tail, log file, expect buffer) and wake whoever waits for it."""
        self.tail.append(scrub_serial(text))
        self._log.write("log", text)
        with self._cond:
            self._lines.append((self._line_seq, text))
            self._line_seq += 1
            self._cond.notify_all()

    def expect(self, regex: re.Pattern[str], limit: float) -> re.Match[str]:
        """The first line after the previous match that matches ``regex``, within ``limit`` s."""
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                for seq, text in self._lines:
                    if seq >= self._expect_from:
                        match = regex.search(text)
                        if match:
                            self._expect_from = seq + 1
                            return match
                if self._lines:
                    self._expect_from = max(self._expect_from, self._lines[-1][0] + 1)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    waited = f"log line matching {regex.pattern!r}"
                    raise BoardTimeout(self._name, waited, limit, self.tail)
                self._cond.wait(min(remaining, 0.1))
