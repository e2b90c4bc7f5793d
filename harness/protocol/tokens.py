"""Checks of the JWTs a claim returns, against the contract's claims (step 7)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from harness.errors import HarnessInputError
from harness.protocol.identity import normalize_id

AUDIENCE = "teddy-api"
ISSUER = "teddy-device-system"
REFRESH_TTL = 7 * 24 * 3600
ACCESS_TTL = 3600  # v5's access tokens live an hour; a server may be told otherwise
# The shortest access-token lifetime the harness accepts (--access-ttl, a fleet's
# [session] access_ttl): the checks allow 5 s of clock leeway, and a token must outlive
# its trip to the device and its check.
MIN_ACCESS_TTL = 10
MAX_ACCESS_TTL = REFRESH_TTL  # beyond the refresh token's life a refresh means nothing
TOKEN_TYPES = {"access": "device_access", "refresh": "device_refresh"}


def check_access_ttl(value: object, where: str = "--access-ttl") -> int:
    """An access-token lifetime: whole seconds, ``MIN_ACCESS_TTL``..``MAX_ACCESS_TTL``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessInputError(where, f"must be a whole number of seconds, got {value!r}")
    if not MIN_ACCESS_TTL <= value <= MAX_ACCESS_TTL:
        raise HarnessInputError(
            where, f"must be within {MIN_ACCESS_TTL}..{MAX_ACCESS_TTL} s, got {value}"
        )
    return value


@dataclass(slots=True)
class TokenCheck:
    """What was wrong with a token, one problem per entry; empty means it is good."""

    problems: list[str] = field(default_factory=list)
    signature_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def check_token(
    token: str,
    device_id: str,
    child_id: str,
    kind: str = "access",
    secret: str | bytes | None = None,
    now: float | None = None,
    leeway: float = 5.0,
    access_ttl_s: int = ACCESS_TTL,
) -> TokenCheck:
    """Check one token's claims; verify its HS256 signature when the server secret is known.

    ``device_id``/``child_id`` are as the device sent them: the token must carry
    their normalised form, as the server keys everything on it. ``access_ttl_s``: the
    access-token lifetime the server was configured with (its exp - iat).
    """
    result = TokenCheck()
    try:
        if secret is not None:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"verify_exp": False, "verify_iat": False},
            )
            result.signature_checked = True
        else:
            claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        result.problems.append(f"token does not decode: {exc}")
        return result
    d, c = normalize_id(device_id), normalize_id(child_id)
    expected = {
        "sub": f"device:{d}:child:{c}",
        "device_id": d,
        "child_id": c,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "type": TOKEN_TYPES[kind],
    }
    for key, want in expected.items():
        got = claims.get(key)
        if got != want:
            result.problems.append(f"{key}={got!r}, expected {want!r}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        result.problems.append("iat/exp missing")
    else:
        ttl = access_ttl_s if kind == "access" else REFRESH_TTL
        if exp - iat != ttl:
            result.problems.append(f"exp - iat = {exp - iat}, expected {ttl}")
        t = time.time() if now is None else now
        if iat > t + leeway:
            result.problems.append("iat is in the future")
        if exp < t - leeway:
            result.problems.append("token already expired")
    if kind == "access" and not claims.get("session_id"):
        result.problems.append("session_id missing")
    return result
