"""Masking rules shared by every writer."""

from __future__ import annotations

from harness.masking import mask_id, mask_secret, scrub


def test_ids_keep_a_short_prefix_only() -> None:
    assert mask_id("Teddy-ESP32-0001") == "Tedd***"
    assert mask_id("abc") == "***"


def test_secrets_keep_only_their_length() -> None:
    assert mask_secret("a" * 64) == "***(64)"


def test_scrub_removes_jwts_and_long_hex() -> None:
    line = "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl hmac " + "ab" * 32
    out = scrub(line)
    assert "eyJhbGciOiJIUzI1NiJ9" not in out and "ab" * 32 not in out
    assert out.startswith("token eyJ*** hmac ***(64)")


def test_scrub_masks_device_identities_in_free_text() -> None:
    line = (
        '@CP1 {"device_id":"CCDBA795BAA4","mac":"CC:DB:A7:95:BA:A4","hmac":"***(64)"} '
        "identity 24:0A:C4:AB:CD:01 CCDBA795BAA4 teddy-esp32-ccdba795baa4 esp32-ab12 "
        "run 3f2a9c1b7d4e"
    )
    out = scrub(line)
    for value in ("CCDBA795BAA4", "CC:DB:A7:95:BA:A4", "24:0A:C4:AB:CD:01", "ccdba795baa4"):
        assert value not in out, value
    assert '"device_id":"CCDB***"' in out and '"mac":"CC:DB***"' in out
    assert '"hmac":"***(64)"' in out  # not taken for a "mac" key
    assert "run 3f2a9c1b7d4e" in out  # a run ID (lower-case hex) is no device
    assert scrub(out) == out  # masking twice changes nothing
