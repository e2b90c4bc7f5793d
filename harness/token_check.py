"""Token checks for every 200 at hot-path cost: claims and HS256 signature without pyjwt.

pyjwt validates base64 character by character in Python and costs about as
much as the rest of a claim, so the runner checks every access token here
(same rules as ``harness.protocol.check_token``: contract step 7) and hands a
sample to ``check_token`` itself as a cross-check. The HS256 signature is one
HMAC-SHA256 and a constant-time compare, so every token's signature is verified
whenever the server's secret is known, with the key schedule done once
(``PrefixedHmac``). Segments are decoded by ``binascii`` in strict mode (which
rejects anything outside the alphabet, so no regex pass is needed) and the
payload is parsed by orjson: measured here, 0.8 µs against 2.5 µs for the
standard library's scanner on a contract payload.
"""

from __future__ import annotations

import binascii
import hmac
import time
from typing import Any

import orjson

from harness.protocol.signing import PrefixedHmac
from harness.protocol.tokens import ACCESS_TTL, AUDIENCE, ISSUER, REFRESH_TTL, TOKEN_TYPES

_ACCESS = TOKEN_TYPES["access"]
# base64url to base64; the standard alphabet's own ``+``/``/`` become ``!``, which strict
# decoding rejects, so one pass both converts and keeps them out.
_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")


def _b64(segment: bytes) -> bytes:
    """base64url, padded or not; ``binascii.Error`` for anything else."""
    raw = segment.translate(_URLSAFE)
    pad = -len(raw) % 4
    return binascii.a2b_base64(raw + b"=" * pad if pad else raw, strict_mode=True)


class FastTokenCheck:
    """Checks tokens against the contract's claims; verifies HS256 when ``secret`` is given."""

    __slots__ = ("_good_header", "_key", "_mac", "access_ttl_s", "leeway")

    def __init__(
        self,
        secret: str | bytes | None = None,
        leeway: float = 5.0,
        access_ttl_s: int = ACCESS_TTL,
    ) -> None:
        """``access_ttl_s``: the access-token lifetime the server was configured with."""
        self._key = secret.encode() if isinstance(secret, str) else secret
        self._mac = PrefixedHmac(self._key) if self._key is not None else None
        self._good_header: bytes | None = None  # tokens of one server share their header
        self.leeway = leeway
        self.access_ttl_s = access_ttl_s

    @property
    def verifies_signatures(self) -> bool:
        return self._key is not None

    def problems(self, token: object, d: str, c: str, kind: str = "access") -> str | None:
        """None when the token (str, or ASCII bytes straight from the body) is good for
        normalised IDs ``d``/``c``; else the first problem."""
        if isinstance(token, str):
            try:
                token = token.encode("ascii")
            except UnicodeEncodeError:
                return "not a JWT"
        if not isinstance(token, bytes):
            return "not a JWT"
        parts = token.split(b".")
        if len(parts) != 3 or not all(parts):
            return "not a JWT"
        head, body, sig = parts
        if head != self._good_header:
            try:
                header = orjson.loads(_b64(head))
            except (binascii.Error, ValueError):
                return "header does not decode"
            if not isinstance(header, dict) or header.get("alg") != "HS256":
                return "header alg is not HS256"
            self._good_header = head
        try:
            got = _b64(sig)  # decoded without the secret too: the alphabet is checked
        except (binascii.Error, ValueError):
            return "signature does not decode"
        if self._mac is not None:
            want = self._mac.digest(token[: len(head) + 1 + len(body)])  # signing input
            if not hmac.compare_digest(want, got):
                return "signature does not verify"
        try:
            claims: Any = orjson.loads(_b64(body))
        except (binascii.Error, ValueError):
            return "payload does not decode"
        if not isinstance(claims, dict):
            return "payload is not an object"
        return claim_problem(claims, d, c, kind, time.time(), self.leeway, self.access_ttl_s)


def claim_problem(
    claims: dict[str, Any],
    d: str,
    c: str,
    kind: str,
    now: float,
    leeway: float,
    access_ttl_s: int = ACCESS_TTL,
) -> str | None:
    """The first way ``claims`` break contract step 7 (access tokens living
    ``access_ttl_s``), or None."""
    get = claims.get
    iat, exp = get("iat"), get("exp")
    if (  # the common case in one expression; the slow path below names the problem
        kind == "access"
        and get("device_id") == d
        and get("child_id") == c
        and get("type") == _ACCESS
        and get("aud") == AUDIENCE
        and get("iss") == ISSUER
        and type(iat) is int
        and type(exp) is int
        and exp - iat == access_ttl_s
        and iat <= now + leeway
        and exp >= now - leeway
        and get("session_id")
        and get("sub") == f"device:{d}:child:{c}"
    ):
        return None
    expected = (
        ("sub", f"device:{d}:child:{c}"),
        ("device_id", d),
        ("child_id", c),
        ("aud", AUDIENCE),
        ("iss", ISSUER),
        ("type", TOKEN_TYPES[kind]),
    )
    for key, want in expected:
        if claims.get(key) != want:  # values stay out: they carry device IDs
            return f"claim {key} is not the contract's"
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        return "iat/exp missing"
    ttl = access_ttl_s if kind == "access" else REFRESH_TTL
    if exp - iat != ttl:
        return f"exp - iat = {exp - iat:g} s, expected {ttl}"
    if iat > now + leeway:
        return "iat is in the future"
    if exp < now - leeway:
        return "token already expired"
    if kind == "access" and not claims.get("session_id"):
        return "session_id missing"
    return None
