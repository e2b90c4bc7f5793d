"""What a caller can observe of a board: its state, and the errors the bridge raises.

Kept apart from :mod:`harness.hil.bridge` so code that only catches a board's
errors (the CLI, comparisons, device runs) does not pull in pyserial and threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class BoardState(Enum):
    """Where a board is, as far as the bridge can tell."""

    CLOSED = "closed"
    CONNECTED = "connected"  # port open, application not (yet) seen
    RUNNING = "running"  # the application answered or announced its boot
    RECONNECTING = "reconnecting"
    IMAGE_ERROR = "image_error"  # boot loop or the firmware reported a bad image
    GONE = "gone"  # the port did not come back within the reconnect window


class BoardError(Exception):
    """A board failed to do what was asked; the message names the board."""


class BoardTimeout(BoardError):
    """No reply in time: says what was waited for and shows the last log lines."""

    def __init__(self, board: str, waited_for: str, timeout: float, tail: Sequence[str]) -> None:
        self.board = board
        self.waited_for = waited_for
        self.timeout = timeout
        self.tail = list(tail)
        last = " | ".join(self.tail[-5:]) or "<no log output>"
        super().__init__(f"{board}: no {waited_for} within {timeout:g} s; last log lines: {last}")


class BoardGone(BoardError):
    """The port vanished and did not come back within the reconnect window."""


class BoardImageError(BoardError):
    """The board is boot-looping or its firmware rejected the image."""


class BoardCommandError(BoardError):
    """The firmware answered ``ok: false``."""

    def __init__(self, board: str, cmd: str, error: str) -> None:
        self.cmd = cmd
        self.error = error
        super().__init__(f"{board}: {cmd} failed: {error}")
