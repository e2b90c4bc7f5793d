"""TOML files whose errors name a line: the one reader fleet files and bench files share.

tomllib reports syntax errors with their position but keeps no positions for
the values it returns, so for a semantic error (an unknown key, a share above
1) ``TomlLines`` finds the line by scanning the file's ``[table]`` /
``[[array]]`` headers and ``key =`` lines; the one-line error then points at
the place to fix.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


class TomlLines:
    """Where each table (the ``index``-th of an array of tables) and each key sits."""

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, int], int] = {}
        self.keys: dict[tuple[str, int, str], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = header.group(2).strip()
                index = counts.get(table, 0)
                counts[table] = index + 1
                self.tables.setdefault((table, index), lineno)
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((table, index, key.group(1)), lineno)

    def line(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        """The key's line, else its table's; None when neither is in the file."""
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.tables.get((table, index))


def read_text(path: str | Path, field: str) -> str:
    """A file's text, or one line saying why not (unreadable, a directory, not UTF-8)."""
    where = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessInputError(field, f"cannot read: {exc.strerror or exc}", where) from None
    except UnicodeDecodeError as exc:
        raise HarnessInputError(
            field,
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            where,
        ) from None


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The document, or a one-line ``toml`` error at ``where:line``."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise HarnessInputError("toml", "arrays or tables nested too deeply", where) from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise HarnessInputError(
            "toml", str(exc).split(" (at")[0], f"{where}:{m.group(1)}" if m else where
        ) from None
