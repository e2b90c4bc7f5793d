"""Bench files: which boards a HIL run drives, with which image, against which target.

A bench is a TOML file (see ``hil/bench.example.toml``)::

    [bench]                 # everything optional
    target = "http://..."   # omit: an embedded server is started with [flags]
    children = ["child-1"]  claims_per_board = 4   board_claims = false
    image = "app.bin"       offset = 0x10000   timeout_s = 5   log_dir = "hil-logs"

    profile = "v5.0"        # the server build (v5.0, v5-head, atomic); environment too

    [flags]                 # the flags of that profile the oracle judges against
    NORMALIZE_IDS_IN_HMAC = false

    [[board]]               # one per board; found by exactly one of:
    port = "/dev/ttyUSB0"   # a path or any pyserial URL
    serial_number = "..."   # or usb_location = "1-1.2", resolved via list_ports
    mac = "CC:DB:..."       # alone: the USB port whose board answers with it;
                            # with port: checked against the board's identity
    virtual = true          # the harness starts a virtual board itself (mac, image)
    image = "app.bin"       # flashed unless the board already runs it
    firmware = "5.1.0"      # what the board is declared to run (default: the image's version)

Relative paths are relative to the bench file. Every mistake is one
:class:`HarnessInputError` naming the file, the line and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.profiles import ServerProfile, make_profile
from harness.protocol import validate_child_id
from harness.toml_lines import TomlLines, parse_toml, read_text

DEFAULT_CHILDREN = ("child-1",)
DEFAULT_OFFSET = 0x10000
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2}){5}$")

BENCH_KEYS = frozenset(
    {
        "name",
        "target",
        "children",
        "claims_per_board",
        "board_claims",
        "image",
        "offset",
        "timeout_s",
        "log_dir",
        "profile",
        "environment",
    }
)
BOARD_KEYS = frozenset(
    {
        "name",
        "port",
        "mac",
        "serial_number",
        "usb_location",
        "virtual",
        "image",
        "offset",
        "firmware",
    }
)
LOCATORS = ("port", "serial_number", "usb_location", "mac")


def normalize_mac(value: str) -> str:
    """``cc-db-a7-95-ba-a4`` / ``CCDBA795BAA4`` -> ``CC:DB:A7:95:BA:A4``."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", value).upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """One ``[[board]]`` entry, validated; ``line`` is where it starts in the bench file."""

    name: str
    line: int
    port: str | None = None
    mac: str | None = None
    serial_number: str | None = None
    usb_location: str | None = None
    virtual: bool = False
    image: Path | None = None
    offset: int = DEFAULT_OFFSET
    firmware: str | None = None  # the version this board is declared to run (compare)

    @property
    def locator(self) -> str:
        """How the bench finds this board, for messages."""
        if self.virtual:
            return "virtual"
        for key in LOCATORS:
            value = getattr(self, key)
            if value:
                return f"{key}={value}"
        return "?"


@dataclass(frozen=True, slots=True)
class Bench:
    """A whole bench file, validated."""

    path: Path
    boards: tuple[BoardSpec, ...]
    name: str = "bench"
    target: str | None = None
    flags: Flags = field(default_factory=Flags)
    # The server profile, flags included (harness.profiles): what the oracle judges against.
    profile: ServerProfile = field(default_factory=ServerProfile)
    children: tuple[str, ...] = DEFAULT_CHILDREN
    claims_per_board: int = 4
    board_claims: bool = False
    timeout_s: float = 5.0
    log_dir: Path | None = None

    def board(self, name: str) -> BoardSpec:
        for spec in self.boards:
            if spec.name == name:
                return spec
        raise HarnessInputError("--board", f"no board named {name!r} in {self.path}")


class _Reader:
    def __init__(self, path: Path, lines: TomlLines) -> None:
        self.path = path
        self.lines = lines

    def error(self, table: str, index: int, key: str | None, field: str, reason: str) -> Exception:
        line = self.lines.line(table, index, key) or 1
        return HarnessInputError(field, reason, f"{self.path}:{line}")

    def get(
        self,
        data: dict[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        where: tuple[str, int, str],
        default: Any = None,
    ) -> Any:
        if key not in data:
            return default
        value = data[key]
        # bool is an int in Python; a bench saying `offset = true` is a mistake.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            value = object()
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            table, index, label = where
            raise self.error(table, index, key, f"{label}{key}", f"must be {names}")
        return value

    def path_of(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)


def load_bench(path: str | Path, extra_flags: Sequence[str] = ()) -> Bench:
    """Read and validate a bench file; ``extra_flags`` (``NAME=VALUE``) override ``[flags]``."""
    p = Path(path)
    text = read_text(p, "--bench")
    data = parse_toml(text, str(p))
    return parse_bench(data, p, text, extra_flags)


def parse_bench(
    data: dict[str, Any], path: Path, text: str = "", extra_flags: Sequence[str] = ()
) -> Bench:
    """Validate a parsed bench document (``text`` is only used to find line numbers)."""
    rd = _Reader(path, TomlLines(text))
    unknown = sorted(set(data) - {"bench", "flags", "board"})
    if unknown:
        table = unknown[0]
        raise rd.error(table, 0, None, table, "unknown table (known: bench, flags, board)")
    top = data.get("bench", {})
    if not isinstance(top, dict):
        raise rd.error("", 0, "bench", "bench", "must be a table")
    for key in top:
        if key not in BENCH_KEYS:
            known = ", ".join(sorted(BENCH_KEYS))
            raise rd.error("bench", 0, key, f"bench.{key}", f"unknown key (known: {known})")
    w = ("bench", 0, "bench.")
    target = rd.get(top, "target", str, w)
    if target is not None and not re.match(r"^https?://[^/\s]+", target):
        raise rd.error("bench", 0, "target", "bench.target", "must be http(s)://host[:port]")
    children_raw = rd.get(top, "children", list, w, list(DEFAULT_CHILDREN))
    children: list[str] = []
    for i, child in enumerate(children_raw):
        try:
            children.append(validate_child_id(child, f"bench.children[{i}]"))
        except HarnessInputError as exc:
            raise rd.error("bench", 0, "children", exc.field, exc.reason) from None
    if not children:
        raise rd.error("bench", 0, "children", "bench.children", "needs at least one child ID")
    claims = rd.get(top, "claims_per_board", int, w, 4)
    if claims < 1:
        raise rd.error("bench", 0, "claims_per_board", "bench.claims_per_board", "must be >= 1")
    timeout_s = float(rd.get(top, "timeout_s", (int, float), w, 5.0))
    if not 0 < timeout_s < math.inf:  # TOML has nan and inf: no board answers in either
        raise rd.error("bench", 0, "timeout_s", "bench.timeout_s", "must be > 0 and finite")
    default_image = rd.get(top, "image", str, w)
    default_offset = rd.get(top, "offset", int, w, DEFAULT_OFFSET)
    log_dir = rd.get(top, "log_dir", str, w)

    flags = _parse_flags(data.get("flags", {}), rd)
    try:
        flags = flags.with_overrides(extra_flags)
    except HarnessInputError as exc:
        raise HarnessInputError(exc.field, exc.reason, "--flag") from None

    try:
        profile = make_profile(
            rd.get(top, "profile", str, w, "v5.0"),
            flags,
            environment=rd.get(top, "environment", str, w, "production"),
            where="profile",
        )
    except HarnessInputError as exc:
        raise rd.error("bench", 0, exc.field, f"bench.{exc.field}", exc.reason) from None

    boards_raw = data.get("board", [])
    if not isinstance(boards_raw, list) or not boards_raw:
        raise rd.error("board", 0, None, "board", "the bench needs at least one [[board]]")
    boards = [
        _parse_board(i, raw, rd, default_image, default_offset) for i, raw in enumerate(boards_raw)
    ]
    _check_unique(boards, rd)
    return Bench(
        path=path,
        boards=tuple(boards),
        name=str(rd.get(top, "name", str, w, path.stem)),
        target=target.rstrip("/") if target else None,
        flags=flags,
        profile=profile,
        children=tuple(children),
        claims_per_board=claims,
        board_claims=bool(rd.get(top, "board_claims", bool, w, False)),
        timeout_s=timeout_s,
        log_dir=rd.path_of(log_dir) if log_dir else None,
    )


def _parse_flags(raw: object, rd: _Reader) -> Flags:
    if not isinstance(raw, dict):
        raise rd.error("", 0, "flags", "flags", "must be a table")
    flags = Flags()
    for name, value in raw.items():
        try:
            flags = flags.with_overrides([f"{name}={value}"])
        except HarnessInputError as exc:
            raise rd.error("flags", 0, name, f"flags.{name}", exc.reason) from None
    return flags


def _parse_board(
    index: int, raw: object, rd: _Reader, default_image: str | None, default_offset: int
) -> BoardSpec:
    label = f"board[{index}]."
    w = ("board", index, label)
    if not isinstance(raw, dict):
        raise rd.error("board", index, None, f"board[{index}]", "must be a table")
    for key in raw:
        if key not in BOARD_KEYS:
            known = ", ".join(sorted(BOARD_KEYS))
            raise rd.error("board", index, key, f"{label}{key}", f"unknown key (known: {known})")
    virtual = bool(rd.get(raw, "virtual", bool, w, False))
    found = {k: rd.get(raw, k, str, w) for k in LOCATORS}
    for key, value in found.items():
        if value is not None and not value.strip():
            raise rd.error("board", index, key, f"{label}{key}", "must not be empty")
    mac = found["mac"]
    if mac is not None and not _MAC.match(mac):
        raise rd.error("board", index, "mac", f"{label}mac", f"{mac!r} is not a MAC address")
    by_usb = [k for k in ("port", "serial_number", "usb_location") if found[k]]
    if virtual and by_usb:
        raise rd.error(
            "board", index, by_usb[0], f"{label}{by_usb[0]}", "a virtual board has no port to find"
        )
    if len(by_usb) > 1:
        raise rd.error(
            "board", index, by_usb[1], f"{label}{by_usb[1]}", f"give only one of {by_usb}"
        )
    if not virtual and not by_usb and not mac:
        raise rd.error(
            "board",
            index,
            None,
            f"board[{index}]",
            "say how to find it: port, serial_number, usb_location, mac, or virtual = true",
        )
    image = rd.get(raw, "image", str, w, default_image)
    image_path = rd.path_of(image) if image else None
    if image_path is not None and not image_path.is_file():
        key = "image" if "image" in raw else None
        line_table = ("board", index) if key else ("bench", 0)
        raise rd.error(
            line_table[0],
            line_table[1],
            key or "image",
            f"{label}image" if key else "bench.image",
            f"no such file: {image_path}",
        )
    offset = rd.get(raw, "offset", int, w, default_offset)
    if offset < 0 or offset % 0x1000:
        raise rd.error("board", index, "offset", f"{label}offset", "must be a 4 KiB-aligned >= 0")
    firmware = rd.get(raw, "firmware", str, w)
    if firmware is not None and not re.fullmatch(r"[0-9A-Za-z._+-]{1,31}", firmware):
        raise rd.error("board", index, "firmware", f"{label}firmware", "not a version string")
    name = rd.get(raw, "name", str, w) or f"board{index}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise rd.error("board", index, "name", f"{label}name", "use letters, digits, - _ . only")
    return BoardSpec(
        name=name,
        line=rd.lines.line("board", index) or 1,
        port=found["port"],
        mac=normalize_mac(mac) if mac else None,
        serial_number=found["serial_number"],
        usb_location=found["usb_location"],
        virtual=virtual,
        image=image_path,
        offset=offset,
        firmware=firmware,
    )


def _check_unique(boards: list[BoardSpec], rd: _Reader) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, spec in enumerate(boards):
        for key in ("name", "port", "mac", "serial_number", "usb_location"):
            value = getattr(spec, key)
            if value is None:
                continue
            if (key, value) in seen:
                first = seen[(key, value)]
                raise rd.error(
                    "board",
                    i,
                    key,
                    f"board[{i}].{key}",
                    f"{value!r} already used by board[{first}]",
                )
            seen[(key, value)] = i


def usb_ports() -> list[Any]:
    """The serial ports the OS lists now (``serial.tools.list_ports``)."""
    from serial.tools import list_ports

    return list(list_ports.comports())


def resolve_port(spec: BoardSpec, bench: Bench, ports: Sequence[Any] | None = None) -> str | None:
    """The port a board is on: as given, or found by serial number / USB location.

    ``None`` for virtual boards (the harness starts them) and for boards given
    only by MAC (found by asking each unclaimed USB port for its identity).
    """
    if spec.virtual or spec.port:
        return spec.port
    key = "serial_number" if spec.serial_number else "usb_location"
    wanted = spec.serial_number or spec.usb_location
    if wanted is None:
        return None
    listed = usb_ports() if ports is None else list(ports)
    attr = "serial_number" if key == "serial_number" else "location"
    for port in listed:
        if getattr(port, attr, None) == wanted:
            return str(port.device)
    seen = ", ".join(f"{p.device}={getattr(p, attr, None)}" for p in listed) or "no serial ports"
    raise HarnessInputError(
        f"board[{bench.boards.index(spec)}].{key}",
        f"no serial port with {key} {wanted!r} (found: {seen})",
        f"{bench.path}:{spec.line}",
    )
