"""Device and child identities as firmware holds them, and the server's normalisation.

IDs keep whatever case and padding the firmware has: that difference is what the
whole compatibility question is about, so nothing here changes an ID unless
asked to.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from harness.errors import ProtocolError

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
DEVICE_ID_LEN = (8, 64)
CHILD_ID_LEN = (1, 64)
AUTO_REGISTER_PREFIXES: tuple[str, ...] = ("teddy-esp32-", "esp32-")
# The v5 server's pydantic rules (CONTRACT.md section 2), applied to the *raw* values.
ID_PATTERN_TEXT = "^[a-zA-Z0-9_-]+$"
FIRMWARE_VERSION_PATTERN = re.compile(r"[a-zA-Z0-9._-]+")
FIRMWARE_VERSION_PATTERN_TEXT = "^[a-zA-Z0-9._-]+$"
FIRMWARE_VERSION_MAX = 32

CaseStyle = Literal["as-is", "upper", "lower", "mixed", "spaces"]


def normalize_id(value: str) -> str:
    """The server's normalisation (contract step 2): ``strip().lower()``."""
    return value.strip().lower()


def _validate(value: object, field: str, bounds: tuple[int, int]) -> str:
    if not isinstance(value, str):
        raise ProtocolError(field, f"must be a string, got {type(value).__name__}")
    core = value.strip()
    lo, hi = bounds
    if not lo <= len(core) <= hi:
        raise ProtocolError(field, f"length {len(core)} outside {lo}..{hi} characters")
    if not ID_PATTERN.fullmatch(core):
        raise ProtocolError(field, f"{value!r} does not match ^[A-Za-z0-9_-]+$")
    return value


def validate_device_id(value: object, field: str = "device_id") -> str:
    """Check a device ID against the contract (8..64 of ``[A-Za-z0-9_-]``).

    Surrounding whitespace is tolerated (the rule applies to the stripped value)
    and kept, because legacy firmware signs the ID exactly as it holds it and the
    server normalises with ``strip()``.
    """
    return _validate(value, field, DEVICE_ID_LEN)


def validate_child_id(value: object, field: str = "child_id") -> str:
    """Check a child ID against the contract (1..64 of ``[A-Za-z0-9_-]``)."""
    return _validate(value, field, CHILD_ID_LEN)


def claim_body_refusal(
    device_id: str, child_id: str, firmware_version: str | None = None
) -> str | None:
    """Why the v5 server's validation refuses these body fields (a 422), or None.

    The server checks its patterns on the raw values, so an ID with surrounding
    spaces is refused although ``strip()`` would make it valid.
    """
    for name, value, (lo, hi) in (
        ("device_id", device_id, DEVICE_ID_LEN),
        ("child_id", child_id, CHILD_ID_LEN),
    ):
        if not lo <= len(value) <= hi:
            return f"{name} length {len(value)} outside {lo}..{hi}"
        if not ID_PATTERN.fullmatch(value):
            return f"{name} does not match {ID_PATTERN_TEXT}"
    if firmware_version is not None:
        if len(firmware_version) > FIRMWARE_VERSION_MAX:
            return f"firmware_version longer than {FIRMWARE_VERSION_MAX}"
        if not FIRMWARE_VERSION_PATTERN.fullmatch(firmware_version):
            return f"firmware_version does not match {FIRMWARE_VERSION_PATTERN_TEXT}"
    return None


def mac_to_device_id(mac: str | bytes) -> str:
    """Firmware v5 device ID: the Wi-Fi MAC without separators, upper-case hex."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ProtocolError("mac", f"must be 6 bytes, got {len(mac)}")
        return mac.hex().upper()
    digits = re.sub(r"[:.\-]", "", mac.strip())
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", digits):
        raise ProtocolError("mac", f"{mac!r} is not a 6-byte MAC address")
    return digits.upper()


def case_variant(device_id: str, style: CaseStyle, rng: random.Random | None = None) -> str:
    """A case/padding variant of an ID, as different firmware generations hold it."""
    if style == "as-is":
        return device_id
    if style == "upper":
        return device_id.upper()
    if style == "lower":
        return device_id.lower()
    if style == "spaces":
        return f" {device_id} "
    if style == "mixed":
        r = rng or random.Random(device_id)
        letters = [i for i, ch in enumerate(device_id) if ch.isalpha()]
        chars = [ch.lower() for ch in device_id]
        for i in letters:
            if r.random() < 0.5:
                chars[i] = chars[i].upper()
        if letters and "".join(chars) in (device_id.lower(), device_id.upper()):
            i = letters[0]
            chars[i] = chars[i].swapcase()
        return "".join(chars)
    raise ProtocolError("case_style", f"unknown style {style!r}")
