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
    """Mask any JWT or long hex run inside free text (error messages, log lines)."""
    text = _JWT.sub("eyJ***", text)
    return _HEX.sub(lambda m: mask_secret(m.group(0)), text)
