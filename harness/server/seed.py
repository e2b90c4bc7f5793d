"""The seed file: the devices and children a server starts with.

The fleet's ``provision export`` writes this format and ``harness serve --seed``
reads it, so both sides share these dataclasses. A bad entry is reported as one
line naming the file and the entry (``devices[3].oob_secret_hex: ...``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.protocol import normalize_id, parse_oob_hex, validate_child_id, validate_device_id
from harness.toml_lines import read_text


@dataclass(frozen=True, slots=True)
class SeedDevice:
    """One device row. ``device_id`` as the fleet holds it; the server stores it lower-case."""

    device_id: str
    oob_secret_hex: str
    is_active: bool = True

    @property
    def oob_secret(self) -> bytes:
        return bytes.fromhex(self.oob_secret_hex)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "oob_secret_hex": self.oob_secret_hex,
            "is_active": self.is_active,
        }


@dataclass(frozen=True, slots=True)
class SeedChild:
    """One child profile row; stored lower-case."""

    child_id: str
    is_active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"child_id": self.child_id, "is_active": self.is_active}


@dataclass(frozen=True, slots=True)
class Seed:
    """Everything a server is provisioned with."""

    devices: tuple[SeedDevice, ...] = field(default_factory=tuple)
    children: tuple[SeedChild, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": [d.to_dict() for d in self.devices],
            "children": [c.to_dict() for c in self.children],
        }

    def merged(self, other: Seed) -> Seed:
        """Both seeds' rows (a fleet's and a bench's), children once each."""
        known = {c.child_id for c in self.children}
        extra = tuple(c for c in other.children if c.child_id not in known)
        return Seed(self.devices + other.devices, self.children + extra)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object, where: str = "seed") -> Seed:
        """Validate a parsed seed document; errors name ``where`` and the bad entry."""
        if not isinstance(data, dict):
            raise HarnessInputError("seed", "top level must be a JSON object", where)
        unknown = set(data) - {"devices", "children"}
        if unknown:
            raise HarnessInputError("seed", f"unknown keys {sorted(unknown)}", where)
        devices = tuple(
            _device(entry, f"devices[{i}]", where)
            for i, entry in enumerate(_list(data, "devices", where))
        )
        children = tuple(
            _child(entry, f"children[{i}]", where)
            for i, entry in enumerate(_list(data, "children", where))
        )
        _no_duplicates([d.device_id for d in devices], "devices", where)
        _no_duplicates([c.child_id for c in children], "children", where)
        return cls(devices, children)


def load_seed(path: str | Path) -> Seed:
    """Read and validate a seed file; every problem is one ``HarnessInputError``."""
    where = str(path)
    text = read_text(path, "seed")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessInputError(
            "seed", f"not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", where
        ) from None
    except RecursionError:
        raise HarnessInputError("seed", "nested too deeply", where) from None
    return Seed.from_dict(data, where)


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise HarnessInputError(key, "must be a list", where)
    return value


def _bool(entry: dict[str, Any], key: str, name: str, where: str) -> bool:
    value = entry.get(key, True)
    if not isinstance(value, bool):
        raise HarnessInputError(f"{name}.{key}", f"must be true or false, got {value!r}", where)
    return value


def _device(entry: object, name: str, where: str) -> SeedDevice:
    if not isinstance(entry, dict):
        raise HarnessInputError(name, "must be an object", where)
    for key in ("device_id", "oob_secret_hex"):
        if key not in entry:
            raise HarnessInputError(f"{name}.{key}", "missing", where)
    try:
        device_id = validate_device_id(entry["device_id"], f"{name}.device_id")
        oob = parse_oob_hex(entry["oob_secret_hex"], f"{name}.oob_secret_hex")
    except HarnessInputError as exc:
        raise HarnessInputError(exc.field, exc.reason, where) from None
    return SeedDevice(device_id.strip(), oob.hex().upper(), _bool(entry, "is_active", name, where))


def _child(entry: object, name: str, where: str) -> SeedChild:
    if not isinstance(entry, dict):
        raise HarnessInputError(name, "must be an object", where)
    if "child_id" not in entry:
        raise HarnessInputError(f"{name}.child_id", "missing", where)
    try:
        child_id = validate_child_id(entry["child_id"], f"{name}.child_id")
    except HarnessInputError as exc:
        raise HarnessInputError(exc.field, exc.reason, where) from None
    return SeedChild(child_id.strip(), _bool(entry, "is_active", name, where))


def _no_duplicates(ids: list[str], kind: str, where: str) -> None:
    seen: dict[str, int] = {}
    for i, raw in enumerate(ids):
        key = normalize_id(raw)
        if key in seen:
            raise HarnessInputError(
                f"{kind}[{i}]",
                f"same ID (case-insensitively) as {kind}[{seen[key]}]",
                where,
            )
        seen[key] = i
