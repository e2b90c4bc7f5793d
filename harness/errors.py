"""One error type for bad input, so every entry point can turn it into one line and exit 2."""

from __future__ import annotations


class HarnessInputError(ValueError):
    """Bad input from a user or a file: carries the field (and where) it concerns.

    The CLI prints ``str(err)`` as a single line and exits with code 2; nothing
    upstream should ever show a traceback for one of these.
    """

    def __init__(self, field: str, reason: str, where: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field}: {reason}")


class ProtocolError(HarnessInputError):
    """A value that breaks the claim protocol's rules (pattern, length, hex)."""
