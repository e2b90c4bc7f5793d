"""Masking of secrets and identifiers in everything the harness and the server write.

One function for all writers (logs, reports, JUnit, console), so a new output
cannot forget a rule. Device and child IDs keep a short prefix so a person can
still tell devices apart; secrets keep nothing that helps an attacker.
"""

from __future__ import annotations

import re

# Long hex runs (HMACs, nonces, OOB secrets) and JWTs, wherever they appear in free text.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
_HEX = re.compile(r"\b[0-9A-Fa-f]{16,}\b")
# Device identities (a v5 ID is its own secret): a JSON or key=value field's value...
_KEYED = re.compile(
    r"""((?:["']?\b(?:device_id|child_id|(mac))\b["']?\s*[:=]\s*["']?))([^"',\s}]+)"""
)
# ...a MAC with separators, a v5 ID (a MAC's 12 hex digits held upper-case, with a digit
# among its letters), and the firmware's prefixed IDs (teddy-esp32-..., esp32-...).
_MAC = re.compile(r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b")
_MAC_ID = re.compile(r"\b(?=[0-9A-F]*[A-F])(?=[0-9A-F]*[0-9])[0-9A-F]{12}\b")
_PREFIXED = re.compile(r"(?i)\b(?:teddy-esp32-|esp32-)[A-Za-z0-9_-]+")


def mask_id(value: str | None, keep: int = 4) -> str:
    """``Teddy-ESP32-0001`` -> ``Tedd***``: enough to tell devices apart in a report."""
    if value is None:
        return "<none>"
    text = str(value)
    if len(text) <= keep:
        return "***"
    return f"{text[:keep]}***"


def mask_secret(value: str | bytes | None) -> str:
    """A secret (OOB secret, HMAC, nonce, token) shows only its length."""
    if value is None:
        return "<none>"
    return f"***({len(value)})"


def scrub(text: str) -> str:
    """Mask secrets and device identities inside free text (error messages, log lines).

    JWTs and long hex runs (HMACs, nonces, secrets) show only their length. Under
    the v5 derivation a device ID is its own secret, so IDs are masked as in
    reports: the values of ``device_id``/``child_id``/``mac`` keys, MACs, the v5
    upper-case MAC IDs and the firmware's prefixed IDs, wherever they appear.
    """
    text = _JWT.sub("eyJ***", text)
    text = _HEX.sub(lambda m: mask_secret(m.group(0)), text)
    text = _KEYED.sub(lambda m: m.group(1) + mask_id(m.group(3), 5 if m.group(2) else 4), text)
    text = _MAC.sub(lambda m: mask_id(m.group(0), keep=5), text)
    text = _MAC_ID.sub(lambda m: mask_id(m.group(0)), text)
    return _PREFIXED.sub(lambda m: mask_id(m.group(0)), text)
