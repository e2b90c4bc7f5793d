"""The Python protocol core against the contract's fixed values and rules."""

from __future__ import annotations

import jwt
import pytest

from harness.errors import ProtocolError
from harness.protocol import (
    ClaimRequest,
    case_variant,
    check_token,
    derive_oob_v5,
    mac_to_device_id,
    new_nonce,
    parse_oob_hex,
    sign_claim,
    validate_device_id,
    validate_nonce,
)


def test_contract_derivation_examples() -> None:
    assert derive_oob_v5("CCDBA795BAA4") == (
        "1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090"
    )
    assert derive_oob_v5("ccdba795baa4") == (
        "99629CF2F66A557E0C3AB36A6D71F3F4F5D1DDBD8A3BA31753359698C497FE23"
    )


def test_mac_to_device_id() -> None:
    assert mac_to_device_id("cc:db:a7:95:ba:a4") == "CCDBA795BAA4"
    assert mac_to_device_id("CC-DB-A7-95-BA-A4") == "CCDBA795BAA4"
    assert mac_to_device_id(bytes.fromhex("ccdba795baa4")) == "CCDBA795BAA4"
    with pytest.raises(ProtocolError, match="mac"):
        mac_to_device_id("CC:DB")


def test_nonce_is_16_bytes_lower_hex() -> None:
    n = new_nonce()
    assert len(n) == 32 and n == n.lower() and bytes.fromhex(n)
    assert new_nonce() != n


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("abc", "length 3"), ("0" * 17, "odd length"), ("zz" * 8, "not hexadecimal"), (5, "string")],
)
def test_bad_nonce_names_the_field(value: object, fragment: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        validate_nonce(value)
    assert str(exc.value).startswith("nonce:") and fragment in str(exc.value)


@pytest.mark.parametrize("value", ["short", "x" * 65, "bad id!!", "CCDBA795 BAA4"])
def test_bad_device_id_names_the_field(value: str) -> None:
    with pytest.raises(ProtocolError, match=r"^device_id:"):
        validate_device_id(value)


def test_surrounding_spaces_are_kept_not_refused() -> None:
    assert validate_device_id(" CCDBA795BAA4 ") == " CCDBA795BAA4 "


def test_non_hex_secret_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"^oob_secret: is not hexadecimal"):
        parse_oob_hex("zz" * 32)


def test_legacy_and_normalized_hmac_differ_only_when_case_or_space_matters() -> None:
    oob = parse_oob_hex(derive_oob_v5("CCDBA795BAA4"))
    n = "00112233445566778899aabbccddeeff"
    legacy = sign_claim("CCDBA795BAA4", "Child-1", n, oob, "legacy")
    normal = sign_claim("CCDBA795BAA4", "Child-1", n, oob, "normalized")
    assert legacy != normal
    assert sign_claim("ccdba795baa4", "child-1", n, oob, "legacy") == normal
    assert len(legacy) == 64 and legacy == legacy.lower()


def test_body_field_order_is_the_firmware_order() -> None:
    req = ClaimRequest.build(
        "CCDBA795BAA4",
        "child-1",
        "00" * 16,
        derive_oob_v5("CCDBA795BAA4"),
        firmware_version="5.0.3",
    )
    assert req.to_json().startswith(b'{"device_id":"CCDBA795BAA4","child_id":"child-1","nonce":')
    assert b'"firmware_version":"5.0.3"}' in req.to_json()


def test_case_variant_mixed_differs_from_both_plain_cases() -> None:
    v = case_variant("Teddy-ESP32-0001", "mixed")
    assert v.lower() == "teddy-esp32-0001" and v not in ("teddy-esp32-0001", "TEDDY-ESP32-0001")


SECRET = "server-secret-" + "s" * 32


def _token(**over: object) -> str:
    claims = {
        "sub": "device:ccdba795baa4:child:child-1",
        "device_id": "ccdba795baa4",
        "child_id": "child-1",
        "session_id": "s",
        "type": "device_access",
        "aud": "teddy-api",
        "iss": "teddy-device-system",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    claims.update(over)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_token_check_accepts_contract_claims_and_verifies_signature() -> None:
    res = check_token(_token(), "CCDBA795BAA4", "Child-1", secret=SECRET, now=1_700_000_010)
    assert res.ok and res.signature_checked


def test_token_check_names_each_wrong_claim() -> None:
    res = check_token(
        _token(device_id="CCDBA795BAA4", exp=1_700_007_200),
        "CCDBA795BAA4",
        "child-1",
        now=1_700_000_010,
    )
    assert any(p.startswith("device_id=") for p in res.problems)
    assert any("exp - iat" in p for p in res.problems)


def test_token_check_rejects_wrong_signature() -> None:
    res = check_token(
        _token(), "ccdba795baa4", "child-1", secret="another-secret-" + "x" * 32, now=1_700_000_010
    )
    assert not res.ok and "does not decode" in res.problems[0]
