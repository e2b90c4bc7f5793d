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
