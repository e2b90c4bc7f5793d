"""The fast token check agrees with pyjwt's check_token on good and broken tokens."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from harness.protocol import check_token
from harness.token_check import FastTokenCheck

SECRET = "a-test-secret-long-enough-for-hs256-keys"
D, C = "ccdba795baa4", "child-0001"


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": f"device:{D}:child:{C}",
        "device_id": D,
        "child_id": C,
        "session_id": str(uuid.uuid4()),
        "type": "device_access",
        "aud": "teddy-api",
        "iss": "teddy-device-system",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(secret: str = SECRET, **changes: object) -> str:
    return jwt.encode(_claims(**changes), secret, algorithm="HS256")


GOOD = _token()
CASES = {
    "good": GOOD,
    "other secret": _token("another-test-secret-long-enough-for-hs256"),
    "other device": _token(device_id="ccdba7000000"),
    "other sub": _token(sub="device:x:child:y"),
    "refresh type": _token(type="device_refresh"),
    "wrong audience": _token(aud="someone-else"),
    "no session": _token(session_id=None),
    "expired": _token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "long ttl": _token(exp=int(time.time()) + 7200),
    "tampered payload": GOOD.split(".")[0]
    + "."
    + _token(device_id="x").split(".")[1]
    + "."
    + GOOD.split(".")[2],
    "alg none": jwt.encode(_claims(), None, algorithm="none"),
    "garbage": "not-a-token",
    "payload not JSON": GOOD.split(".")[0] + ".bm90IGpzb24." + GOOD.split(".")[2],
    "four segments": GOOD + ".e30",
    "payload not base64": GOOD.split(".")[0] + ".e30!." + GOOD.split(".")[2],
}

# base64's standard alphabet in a token: pyjwt decodes it, the contract's JWTs never hold it.
_SIG = GOOD.split(".")[2]
# "~~~" encodes to "fn5+": a payload in the standard alphabet that holds a "+".
_STD_PAYLOAD = base64.b64encode(json.dumps(_claims(note="~~~~~~")).encode()).decode().rstrip("=")
assert "+" in _STD_PAYLOAD
STRICTER = {
    "standard alphabet": GOOD.rsplit(".", 1)[0] + "." + _SIG[:-2] + "+/",
    "standard alphabet payload": GOOD.split(".")[0] + "." + _STD_PAYLOAD + "." + _SIG,
}
CASES.update(STRICTER)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("secret", [SECRET, None], ids=["signed", "claims-only"])
def test_fast_check_agrees_with_pyjwt(name: str, secret: str | None) -> None:
    token = CASES[name]
    fast = FastTokenCheck(secret).problems(token, D, C)
    if name in STRICTER:
        assert fast is not None
        return
    if name == "alg none":  # stricter than pyjwt's unverified decode: the contract says HS256
        assert fast is not None
        return
    slow = check_token(token, D, C, "access", secret)
    assert (fast is None) == slow.ok, (fast, slow.problems)
    if name == "good":
        assert fast is None


def test_signature_is_what_fails_without_the_right_secret() -> None:
    assert FastTokenCheck(SECRET).problems(CASES["other secret"], D, C) == (
        "signature does not verify"
    )
    assert FastTokenCheck(None).problems(CASES["other secret"], D, C) is None


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 65, 200])
@pytest.mark.parametrize("prefix_len", [0, 7, 70])
def test_prefixed_hmac_equals_the_standard_one(key_len: int, prefix_len: int) -> None:
    import hmac
    import os

    from harness.protocol.signing import PrefixedHmac

    key, prefix = os.urandom(key_len), os.urandom(prefix_len)
    mac = PrefixedHmac(key, prefix)
    for message in (b"", os.urandom(16), os.urandom(100)):
        assert mac.digest(message) == hmac.digest(key, prefix + message, "sha256")
        assert mac.hexdigest(message) == hmac.new(key, prefix + message, "sha256").hexdigest()


def test_a_configured_access_ttl_is_accepted_and_a_mismatch_named() -> None:
    """A server told ``access_ttl_s`` issues exp - iat = that; both checks must follow it."""
    now = int(time.time())
    short = _token(iat=now, exp=now + 60)
    hour = _token(iat=now, exp=now + 3600)
    fast = FastTokenCheck(SECRET, access_ttl_s=60)
    assert fast.problems(short, D, C) is None
    assert fast.problems(hour, D, C) == "exp - iat = 3600 s, expected 60"
    assert FastTokenCheck(SECRET).problems(short, D, C) == "exp - iat = 60 s, expected 3600"
    assert check_token(short, D, C, "access", SECRET, access_ttl_s=60).ok
    assert check_token(hour, D, C, "access", SECRET, access_ttl_s=60).problems == [
        "exp - iat = 3600, expected 60"
    ]
    assert check_token(short, D, C, "access", SECRET).problems == ["exp - iat = 60, expected 3600"]
    # the refresh token keeps its week whatever the access tokens' lifetime
    week = _token(type="device_refresh", iat=now, exp=now + 7 * 24 * 3600)
    assert fast.problems(week, D, C, "refresh") is None
    assert check_token(week, D, C, "refresh", SECRET, access_ttl_s=60).ok
    assert fast.problems(short, D, C, "refresh") is not None
