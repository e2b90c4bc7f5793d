"""Masking of secrets and identifiers in everything the harness and the server write.

One function for all writers (logs, reports, JUnit, console), so a new output
cannot forget a rule (``scrub_serial`` adds the firmware's serial line shapes for what a
board printed). Device and child IDs keep a short prefix so a person can still tell
devices apart; secrets keep nothing that helps an attacker.
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
# Pieces of secrets the rules above miss: a token's first characters (base64url of '{"',
# no dots yet) and a short hex prefix printed with an ellipsis (a secret's first 8).
_JWT_PIECE = re.compile(r"eyJ[A-Za-z0-9_-]{6,}")
_HEX_PIECE = re.compile(r"\b[0-9A-Fa-f]{6,15}(?=\.\.\.|\u2026)")

# What the firmware prints on serial (CONTRACT.md section 1): its claim path's lines,
# whatever they hold. The values are masked whole, not by what they look like, so an ID
# of any shape, a 16-hex secret prefix or a token's first 20 characters cannot slip by.
_CANONICAL = re.compile(
    r"(?i)(canonical device id\s*:\s*)(.*?)(?:(\s*\(\s*from mac\s*:\s*)(.*)(\)))?\s*$"
)
_AUTH_ATTEMPT = re.compile(r"(?i)(auth attempt\s*:\s*)(.*)$")
_PAIR = re.compile(
    r"([A-Za-z][A-Za-z0-9 _-]{0,30}?\s*=\s*)(.*?)(?=,\s*[A-Za-z][A-Za-z0-9 _-]{0,30}?\s*=|$)"
)
# "<label>: value" / "<label>=value" where the label names an identity or a secret:
# "Device ID: ...", "Nonce: ...", "HMAC (first 16): ...", "Token (first 20 chars): ...",
# "Request payload: {...}", "Response body: {...}". A quoted key ("nonce":) is JSON, which
# _KEYED and the value rules handle, so it is no label here.
_IDENTITY_NOUNS = r"device|child|mac"
_SECRET_NOUNS = (
    r"nonce|hmac|signature|secret|oob|key|token|jwt|payload|request|response|body"
    r"|authorization|password|credentials?"
)
_LABEL = re.compile(
    rf"(?i)(?<![\w\"'])(?:(?P<id>{_IDENTITY_NOUNS})|(?:{_SECRET_NOUNS}))(?![\w\"'])"
    r"(?P<rest>[^:=\"'{}\n]{0,40}?)\s*[:=](?!//)\s*"
)
_JSON_LINE = re.compile(r"^\s*(?:\{|\[\s*[{\[\"\]])")
_MASKED = re.compile(r"^\S{0,5}\*\*\*(?:\(\d+\))?(?:\.\.\.|\u2026)?$")


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
    upper-case MAC IDs and the firmware's prefixed IDs, wherever they appear. A
    token's first characters count as a token, and the firmware's two every-build
    claim lines (``Canonical Device ID: ... (from MAC: ...)``, ``Auth attempt:
    Device=..., ...``) have their values masked whole. Board output gets more:
    ``scrub_serial``.
    """
    text = _JWT.sub("eyJ***", text)
    text = _HEX.sub(lambda m: mask_secret(m.group(0)), text)
    text = _KEYED.sub(lambda m: m.group(1) + mask_id(m.group(3), 5 if m.group(2) else 4), text)
    text = _MAC.sub(lambda m: mask_id(m.group(0), keep=5), text)
    text = _MAC_ID.sub(lambda m: mask_id(m.group(0)), text)
    text = _PREFIXED.sub(lambda m: mask_id(m.group(0)), text)
    text = _JWT_PIECE.sub("eyJ***", text)
    if "canonical" not in text.lower() and "auth attempt" not in text.lower():
        return text
    return "\n".join(_firmware_line(line) for line in text.split("\n"))


def scrub_serial(text: str) -> str:
    """``scrub`` for what a board printed on serial: its claim-path lines masked whole.

    Besides ``scrub``'s rules, a line that labels a value as an identity or a
    secret (``Device ID: ...``, ``Nonce: ...``, ``HMAC (first 16): ...``,
    ``Token (first 20 chars): ...``, ``Request payload: {...}``, ``Response: {...}``)
    has the whole value after the label masked, whatever it looks like, and so
    does a short hex prefix printed with an ellipsis (a secret's first 8). Only
    for board output: in the harness's own texts ("device X: legacy-signed ...")
    a label rule would mask the explanation.
    """
    text = _HEX_PIECE.sub(lambda m: mask_secret(m.group(0)), scrub(text))
    if ":" not in text and "=" not in text:
        return text
    return "\n".join(_labelled_line(line) for line in text.split("\n"))


def _value(value: str, identity: bool, keep: int = 4) -> str:
    """A labelled value masked whole: an identity keeps its short prefix, a secret nothing;
    what is already masked stays as it is (masking twice changes nothing)."""
    tail = value[len(value.rstrip()) :]  # keep a trailing "\r" or spaces where they were
    core = value.rstrip()
    if not core or _MASKED.match(core):
        return value
    return (mask_id(core, keep) if identity else mask_secret(core)) + tail


def _firmware_line(line: str) -> str:
    """claimDevice()'s two every-build lines, their values masked whatever they hold."""
    if _JSON_LINE.match(line):  # a JSON document (server log, frame): the key rules did it
        return line
    m = _CANONICAL.search(line)
    if m is not None:
        out = line[: m.start()] + m.group(1) + _value(m.group(2), True)
        if m.group(3) is not None:
            out += m.group(3) + _value(m.group(4), True, keep=5) + m.group(5)
        return out
    m = _AUTH_ATTEMPT.search(line)
    if m is not None:
        pairs = _PAIR.sub(
            lambda p: p.group(1) + _value(p.group(2), _is_identity(p.group(1))), m.group(2)
        )
        if "=" not in m.group(2):  # no Name=value pairs: the whole rest is the value
            pairs = _value(m.group(2), False)
        return line[: m.start()] + m.group(1) + pairs
    return line


def _labelled_line(line: str) -> str:
    """A board line labelling an identity or a secret: everything after the label masked."""
    if _JSON_LINE.match(line) or _CANONICAL.search(line) or _AUTH_ATTEMPT.search(line):
        return line  # JSON has its key rules; the two claimDevice() lines are done
    m = _LABEL.search(line)
    if m is None:
        return line
    return line[: m.end()] + _value(line[m.end() :], m.group("id") is not None)


def _is_identity(label: str) -> bool:
    return re.match(rf"(?i)\s*(?:{_IDENTITY_NOUNS})\b", label) is not None


def mask_url(url: str) -> str:
    """A URL with any ``user:password@`` masked (a broker URL may carry the observer's)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    authority, slash, path = rest.partition("/")
    creds, _, host = authority.rpartition("@")  # the last @: a password may hold one
    host += slash + path
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"
