"""Reading ``fleets/*.toml`` into a ``Fleet``, with errors that name file, line and key.

Lines come from ``harness.toml_lines``, the reader bench files use too.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError, ProtocolError
from harness.faults.modes import parse_duration
from harness.faults.windows import FaultWindow, check_windows, fault_window
from harness.firmware import HABITS, firmware_named
from harness.fleet.model import MAX_COHORT_DEVICES, MAX_COHORTS, ChildProfile, Cohort, Fleet
from harness.mqtt.spec import SessionSpec, session_spec
from harness.profiles import build_named, parse_environment
from harness.protocol import parse_oob_hex, validate_child_id, validate_device_id
from harness.protocol.identity import claim_body_refusal
from harness.protocol.tokens import check_access_ttl
from harness.toml_lines import TomlLines, parse_toml, read_text

ID_STYLES = ("mac-upper", "mac-lower", "prefixed", "mixed-case", "spaces")
SUFFIXES = ("hex", "HEX", "number")
SIGNINGS = ("legacy", "normalized")
OOB_SCHEMES = ("v5-derived", "provisioned", "static")
CHILD_CASES = ("as-is", "upper", "mixed", "spaces")
SHARES = ("loss", "concurrent_duplicates", "bad_hmac_first", "replay_other_hmac", "invalid_bodies")
COHORT_KEYS = tuple(f.name for f in fields(Cohort) if f.name not in ("offset", "line", "ordinal"))
DEFAULT_KEYS = tuple(k for k in COHORT_KEYS if k not in ("name", "count"))
MAX_CHILDREN = 100_000  # per [children] count and inactive
TOP_KEYS = ("fleet", "children", "defaults", "cohorts", "faults", "session")
# A cohort key that is a table: [defaults] and a cohort override it key by key, over the
# top-level [session] (harness.mqtt.spec), instead of replacing it whole.
SESSION = "session"
# The one top-level [session] key that is not a SessionSpec field: it is the server's.
ACCESS_TTL_KEY = "access_ttl"

_ARRAY_ITEM = re.compile(r"^(.*)\[(\d+)\]$")  # "cohorts[3]": the 4th [[cohorts]]


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = TomlLines(text)

    def line(self, table: str, key: str | None = None) -> int | None:
        item = _ARRAY_ITEM.match(table)
        if item is not None:
            return self.lines.line(item.group(1), int(item.group(2)), key)
        return self.lines.line(table, 0, key)

    def error(self, table: str, key: str | None, reason: str) -> HarnessInputError:
        name = ".".join(part for part in (table, key) if part)  # top-level keys: no dot
        return self.error_at(self.line(table, key), name, reason)

    def error_at(self, line: int | None, name: str, reason: str) -> HarnessInputError:
        where = f"{self.path}:{line}" if line else self.path
        return HarnessInputError(name, reason, where)

    def sub_line(self, parent: str, index: int, sub: str, key: str | None) -> int | None:
        """Where ``key`` of table ``parent`` (its ``index``-th, for an array)'s sub-table
        ``sub`` sits: under its own ``[parent.sub]`` header (the first after the parent's
        header and before the next one's), else at the parent's inline ``sub = {...}``."""
        tables = self.lines.tables
        name = f"{parent}.{sub}" if parent else sub
        start = tables.get((parent, index), 0) if parent else 0
        end = tables.get((parent, index + 1)) if parent else None
        j = 0
        while (name, j) in tables:
            at = tables[(name, j)]
            if at > start and (end is None or at < end):
                return self.lines.line(name, j, key)
            j += 1
        return self.lines.line(parent, index, sub)

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error("", name, "must be a table")
        return value

    def only(self, data: dict[str, Any], table: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(table, key, f"unknown key (known: {', '.join(allowed)})")

    def get(self, data: dict[str, Any], table: str, key: str, kind: type, default: Any) -> Any:
        value = data.get(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # tomllib's integers have no size limit
                raise self.error(table, key, "must be a finite number") from None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(table, key, f"must be {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):  # TOML allows inf and nan
            raise self.error(table, key, f"must be a finite number, got {value!r}")
        return value

    def choice(self, data: dict[str, Any], table: str, key: str, options: tuple[str, ...]) -> str:
        value = self.get(data, table, key, str, options[0])
        if value not in options:
            raise self.error(table, key, f"{value!r} is not one of {', '.join(options)}")
        return str(value)


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; each problem is one ``HarnessInputError`` (file:line key)."""
    return parse_fleet(read_text(path, "fleet"), str(path))


def parse_fleet(text: str, where: str = "<fleet>") -> Fleet:
    """Parse fleet TOML text (``where`` names it in errors)."""
    data = parse_toml(text, where)
    r = _Reader(where, text)
    r.only(data, "", TOP_KEYS)

    head = r.table(data, "fleet")
    r.only(head, "fleet", ("name", "seed", "profile", "environment"))
    name = r.get(head, "fleet", "name", str, Path(where).stem)
    profile = head.get("profile")
    environment = head.get("environment")
    try:
        if profile is not None:
            build_named(r.get(head, "fleet", "profile", str, ""), "profile")
        if environment is not None:
            parse_environment(r.get(head, "fleet", "environment", str, ""), "environment")
    except HarnessInputError as exc:
        raise r.error("fleet", exc.field, exc.reason) from None
    seed = r.get(head, "fleet", "seed", int, 0)
    if not -(2**63) <= seed < 2**63:
        raise r.error("fleet", "seed", "must fit in 64 bits")

    kids = r.table(data, "children")
    r.only(kids, "children", ("count", "prefix", "inactive"))
    child_prefix = r.get(kids, "children", "prefix", str, "child-")
    n_active = r.get(kids, "children", "count", int, 10)
    n_inactive = r.get(kids, "children", "inactive", int, 1)
    if not 1 <= n_active <= MAX_CHILDREN:  # every child is made here, at load: bound it
        raise r.error("children", "count", f"must be within 1..{MAX_CHILDREN}")
    if not 0 <= n_inactive <= MAX_CHILDREN:
        raise r.error("children", "inactive", f"must be within 0..{MAX_CHILDREN}")
    children = tuple(ChildProfile(f"{child_prefix}{i:04d}") for i in range(1, n_active + 1))
    children += tuple(
        ChildProfile(f"{child_prefix}inactive-{i:02d}", False) for i in range(1, n_inactive + 1)
    )
    try:
        for child in children:
            validate_child_id(child.child_id, "children.prefix")
    except ProtocolError as exc:
        raise r.error("children", "prefix", exc.reason) from None

    fleet_session, access_ttl_s = _top_session(r, r.table(data, SESSION))
    defaults = r.table(data, "defaults")
    r.only(defaults, "defaults", DEFAULT_KEYS)
    default_session = _session(r, defaults.get(SESSION), "defaults", 0, fleet_session)
    defaults = {k: v for k, v in defaults.items() if k != SESSION}
    raw_cohorts = data.get("cohorts")
    if not isinstance(raw_cohorts, list) or not raw_cohorts:
        raise r.error("", "cohorts", "a fleet needs at least one [[cohorts]] table")

    cohorts: list[Cohort] = []
    offset = 0
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_cohorts):
        table = f"cohorts[{i}]"
        if not isinstance(raw, dict):
            raise r.error(table, None, "must be a table")
        r.only(raw, table, COHORT_KEYS)
        if i >= MAX_COHORTS:
            raise r.error(table, None, f"at most {MAX_COHORTS} cohorts")
        own = {k: v for k, v in raw.items() if k != SESSION}
        cohort = _cohort(r, table, {**defaults, **own}, own, offset, n_inactive)
        session = _session(r, raw.get(SESSION), "cohorts", i, default_session)
        cohort = replace(cohort, ordinal=i, session=session)
        if cohort.name in seen:
            raise r.error(
                table, "name", f"duplicate cohort name (also cohorts[{seen[cohort.name]}])"
            )
        seen[cohort.name] = i
        cohorts.append(cohort)
        offset += cohort.count
    _numbered_prefixes_unique(r, cohorts)
    faults = _faults(r, data.get("faults", []))
    return Fleet(name, seed, tuple(cohorts), children, where, child_prefix, profile, environment,
                 faults, access_ttl_s)  # fmt: skip


def _top_session(r: _Reader, raw: dict[str, Any]) -> tuple[SessionSpec, int | None]:
    """The top-level ``[session]``: fleet-wide session defaults, and ``access_ttl`` (a
    duration, whole seconds) for the server the fleet runs against."""
    rest = {k: v for k, v in raw.items() if k != ACCESS_TTL_KEY}
    spec = _session(r, rest, "", 0, SessionSpec())
    if ACCESS_TTL_KEY not in raw:
        return spec, None
    value = raw[ACCESS_TTL_KEY]

    def bad(reason: str) -> HarnessInputError:
        return r.error(SESSION, ACCESS_TTL_KEY, reason)

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise bad(f'must be a duration ("90s" or 90), got {value!r}')
    try:
        seconds = parse_duration(str(value), ACCESS_TTL_KEY)
    except HarnessInputError as exc:
        raise bad(exc.reason) from None
    if not seconds.is_integer():  # iat and exp are whole seconds
        raise bad(f"must be whole seconds, got {value!r}")
    try:
        return spec, check_access_ttl(int(seconds), ACCESS_TTL_KEY)
    except HarnessInputError as exc:
        raise bad(exc.reason) from None


def _session(r: _Reader, raw: Any, parent: str, index: int, base: SessionSpec) -> SessionSpec:
    """A ``session`` table (``[session]``, ``[defaults.session]``, a cohort's
    ``[cohorts.session]`` or inline ``session = {...}``) over ``base``, key by key."""
    if parent == "cohorts":
        name = f"cohorts[{index}].{SESSION}"
    else:
        name = f"{parent}.{SESSION}" if parent else SESSION
    if parent and isinstance(raw, dict) and ACCESS_TTL_KEY in raw:
        line = r.sub_line(parent, index, SESSION, ACCESS_TTL_KEY)
        raise r.error_at(
            line, f"{name}.{ACCESS_TTL_KEY}", "is fleet-wide: set it in the top-level [session]"
        )
    try:
        return session_spec(raw, name, base)
    except HarnessInputError as exc:
        key = exc.field.removeprefix(f"{name}.") if exc.field.startswith(f"{name}.") else None
        raise r.error_at(r.sub_line(parent, index, SESSION, key), exc.field, exc.reason) from None


def _faults(r: _Reader, raw: Any) -> tuple[FaultWindow, ...]:
    """``[[faults]]``: ``target``, ``mode``, ``at`` and ``for`` (durations: "5s", 0.5)."""
    if not isinstance(raw, list):
        raise r.error("", "faults", "must be an array of tables ([[faults]])")
    windows = []
    for i, item in enumerate(raw):
        table = f"faults[{i}]"
        if not isinstance(item, dict):
            raise r.error(table, None, "must be a table")
        r.only(item, table, ("target", "mode", "at", "for"))
        for key in ("target", "mode", "at", "for"):
            if key not in item:
                raise r.error(table, None, f"missing key {key!r}")
            if isinstance(item[key], bool) or not isinstance(item[key], str | int | float):
                raise r.error(table, key, f"must be a string or a number, got {item[key]!r}")
        try:
            windows.append(fault_window(str(item["target"]), str(item["mode"]), str(item["at"]),
                                        str(item["for"]), "faults"))  # fmt: skip
        except HarnessInputError as exc:
            raise r.error(table, None, exc.reason) from None
    try:
        check_windows(tuple(windows), "faults")
    except HarnessInputError as exc:
        raise r.error("", "faults", exc.reason) from None
    return tuple(windows)


def _cohort(
    r: _Reader,
    table: str,
    merged: dict[str, Any],
    own: dict[str, Any],
    offset: int,
    n_inactive: int,
) -> Cohort:
    def tbl(key: str) -> str:  # a defaulted key's error points at [defaults]
        return table if key in own else "defaults"

    def get(key: str, kind: type, default: Any) -> Any:
        return r.get(merged, tbl(key), key, kind, default)

    def choice(key: str, options: tuple[str, ...]) -> str:
        return r.choice(merged, tbl(key), key, options)

    if "name" not in own:
        raise r.error(table, None, "missing key 'name'")
    if "count" not in own:
        raise r.error(table, None, "missing key 'count'")
    name = get("name", str, "")
    count = get("count", int, 0)
    if not 0 <= count <= MAX_COHORT_DEVICES:
        raise r.error(table, "count", f"must be within 0..{MAX_COHORT_DEVICES}")
    firmware = get("firmware", str, "") if "firmware" in merged else None
    if firmware is not None:
        try:
            firmware = firmware_named(firmware).name
        except HarnessInputError as exc:
            raise r.error(tbl("firmware"), "firmware", exc.reason) from None
        for key in ("id_style", "prefix", "suffix"):
            if key in own:
                raise r.error(
                    table, key, f"the {firmware} firmware derives the ID from the MAC itself"
                )
    style = choice("id_style", ID_STYLES)
    prefix = get("prefix", str, "Teddy-ESP32-" if style == "prefixed" else "")
    suffix = choice("suffix", SUFFIXES)
    oob = choice("oob", OOB_SCHEMES)
    static_hex = merged.get("static_secret")
    static_secret = None
    if static_hex is not None:
        try:
            static_secret = parse_oob_hex(static_hex, "static_secret")
        except ProtocolError as exc:
            raise r.error(tbl("static_secret"), "static_secret", exc.reason) from None
    child = get("child", str, "active")
    if child == "inactive" and n_inactive == 0:
        raise r.error(tbl("child"), "child", "no inactive children: set [children] inactive")
    if child not in ("active", "inactive", "unknown"):
        try:
            validate_child_id(child)
        except ProtocolError as exc:
            raise r.error(tbl("child"), "child", exc.reason) from None
    cohort = Cohort(
        name=name,
        count=count,
        id_style=style,
        prefix=prefix,
        suffix=suffix,
        firmware_version=get("firmware_version", str, "5.0.3"),
        signing=choice("signing", SIGNINGS),
        oob=oob,
        static_secret=static_secret,
        provisioned=get("provisioned", bool, True),
        active=get("active", bool, True),
        child=child,
        child_case=choice("child_case", CHILD_CASES),
        loss=get("loss", float, 0.0),
        retry_delay=get("retry_delay", float, 0.05),
        concurrent_duplicates=get("concurrent_duplicates", float, 0.0),
        bad_hmac_first=get("bad_hmac_first", float, 0.0),
        replay_other_hmac=get("replay_other_hmac", float, 0.0),
        invalid_bodies=get("invalid_bodies", float, 0.0),
        firmware=firmware,
        time_scale=get("time_scale", float, 1.0),
        habits=choice("habits", tuple(HABITS)) if "habits" in merged else None,
        weight=get("weight", float, 1.0),
        offset=offset,
        line=r.line(table) or 0,
    )
    for key in SHARES:
        value = getattr(cohort, key)
        if not 0.0 <= value <= 1.0:
            raise r.error(tbl(key), key, f"share must be within 0..1, got {value}")
    if sum(cohort.network_shares) > 1.0 + 1e-9:
        raise r.error(table, None, f"{', '.join(SHARES)} add up to more than 1")
    if cohort.retry_delay < 0:
        raise r.error(tbl("retry_delay"), "retry_delay", "must not be negative")
    if cohort.weight < 0:
        raise r.error(tbl("weight"), "weight", "must not be negative")
    if not 0 <= cohort.time_scale <= 1000:
        raise r.error(tbl("time_scale"), "time_scale", "must be within 0..1000")
    refused = claim_body_refusal("CCDBA7000000", "c", cohort.firmware_version)
    if refused is not None:  # the server would answer every claim 422
        raise r.error(
            tbl("firmware_version"),
            "firmware_version",
            f"the server refuses it: {refused.removeprefix('firmware_version ')}",
        )
    if style in ("mac-upper", "mac-lower") and prefix:
        raise r.error(tbl("prefix"), "prefix", f"a prefix makes no sense with id_style {style}")
    # The generated ID must itself follow the contract (8..64 of [A-Za-z0-9_-]).
    sample = f"{prefix}{'9' * 6}" if prefix else "CCDBA7000000"
    if suffix == "number":
        sample = f"{prefix}{offset + count:04d}" if prefix else sample
    try:
        validate_device_id(sample, "prefix")
    except ProtocolError as exc:
        raise r.error(tbl("prefix"), "prefix", exc.reason) from None
    return cohort


def _numbered_prefixes_unique(r: _Reader, cohorts: list[Cohort]) -> None:
    """Numbered IDs (prefix + 0001...) restart in every cohort: two numbered cohorts may not
    share a prefix, nor may one whose numbers reach 6 digits (hex suffixes are 6 long)."""
    for i, cohort in enumerate(cohorts):
        if cohort.suffix != "number" or not cohort.prefix:
            continue
        for j, other in enumerate(cohorts):
            if j == i or not other.prefix or other.prefix.lower() != cohort.prefix.lower():
                continue
            if other.suffix == "number" or cohort.count >= 99_999:
                raise r.error(
                    f"cohorts[{max(i, j)}]",
                    "prefix",
                    f"shared with cohorts[{min(i, j)}]: their numbered IDs would collide",
                )
