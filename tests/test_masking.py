"""Masking rules shared by every writer."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.masking import mask_id, mask_secret, scrub, scrub_serial


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


# --- what the firmware prints on serial (CONTRACT.md section 1) ---------------------------

MAC = "CC:DB:A7:95:BA:A4"
CLAIM_ID = "CCDBA795BAA4"  # claimDevice(): the MAC without separators, upper-case
LIVE_ID = "teddy-esp32-ccdba795baa4"  # the live path's ID
CHILD = "child-unknown"
# Arduino-ESP32 log prefix, ESP-IDF log prefix, nothing at all.
PREFIXES = ("[  1234][I][claim.cpp:88] claimDevice(): ", "I (1234) claim: ", "")


def _session() -> tuple[list[str], dict[str, str], dict[str, str]]:
    """A claim as both firmware paths print it: (lines, secrets, identities) by name."""
    import jwt

    from harness.protocol import derive_oob_v5, new_nonce, sign_claim

    secret = derive_oob_v5(CLAIM_ID)
    nonce = new_nonce()
    hmac_hex = sign_claim(CLAIM_ID, CHILD, nonce, bytes.fromhex(secret))
    token = jwt.encode({"sub": LIVE_ID, "type": "access"}, "k" * 32, algorithm="HS256")
    refresh = jwt.encode({"sub": LIVE_ID, "type": "refresh"}, "k" * 32, algorithm="HS256")
    payload = (
        f'{{"device_id":"{LIVE_ID}","child_id":"{CHILD}","nonce":"{nonce}",'
        f'"hmac_hex":"{hmac_hex}"}}'
    )
    response = f'{{"access_token":"{token}","refresh_token":"{refresh}","expires_in":300}}'
    body = [
        # the live path, every build
        f"Device ID: {LIVE_ID}",
        f"Child ID: {CHILD}",
        f"Nonce: {nonce}",
        f"HMAC: {hmac_hex}",
        f"OOB secret (first 8): {secret[:8]}...",
        f"Generated OOB secret: {secret}",
        f"Request payload: {payload}",
        f"Response: {response}",
        # claimDevice(), every build
        f"Canonical Device ID: {CLAIM_ID} (from MAC: {MAC})",
        f"Auth attempt: Device={CLAIM_ID}, Child={CHILD}, Firmware=5.0.3",
        # claimDevice(), DEVELOPMENT_BUILD
        f"Secret (first 16 hex): {secret[:16]}",
        f"Nonce: {nonce}",
        f"HMAC (first 16 hex): {hmac_hex[:16]}",
        f"Token (first 20 chars): {token[:20]}",
    ]
    lines = [p + line + end for p in PREFIXES for line in body for end in ("", "\r")]
    secrets = {
        "secret": secret,
        "secret[:16]": secret[:16],
        "secret[:8]": secret[:8],
        "nonce": nonce,
        "hmac": hmac_hex,
        "hmac[:16]": hmac_hex[:16],
        "token": token,
        "token[:20]": token[:20],
        "refresh": refresh,
    }
    identities = {"live id": LIVE_ID, "claim id": CLAIM_ID, "mac": MAC, "child": CHILD}
    return lines, secrets, identities


def _leaks(out: str, secrets: dict[str, str], identities: dict[str, str]) -> list[str]:
    """Which secrets show (whole, as any 16-char piece, or the first 8 of a prefix), and
    which identities show more than their masked prefix (in any case)."""
    low = out.lower()
    found = []
    for name, value in secrets.items():
        pieces = {value[i : i + 16] for i in range(max(1, len(value) - 15))} | {value[:8]}
        if any(p.lower() in low for p in pieces):
            found.append(name)
    for name, value in identities.items():
        if value[5:].lower() in low:
            found.append(name)
    return found


def test_firmware_serial_lines_leak_no_secret_and_no_identity() -> None:
    lines, secrets, identities = _session()
    for line in lines:
        out = scrub_serial(line)
        assert not _leaks(out, secrets, identities), (line, out)
        assert scrub_serial(out) == out, line  # masking twice changes nothing


def test_serial_labels_stay_readable() -> None:
    """The line still says what it was; only the value is masked."""
    assert scrub_serial(f"Canonical Device ID: {CLAIM_ID} (from MAC: {MAC})") == (
        "Canonical Device ID: CCDB*** (from MAC: CC:DB***)"
    )
    assert scrub_serial(f"Auth attempt: Device={CLAIM_ID}, Child={CHILD}, Firmware=5.0.3") == (
        "Auth attempt: Device=CCDB***, Child=chil***, Firmware=***(5)"
    )
    assert scrub_serial("Token (first 20 chars): eyJhbGciOiJIUzI1NiIs") == (
        "Token (first 20 chars): eyJ***"
    )
    assert (
        scrub_serial("Secret (first 16 hex): 1422C407BEF8AD2F") == "Secret (first 16 hex): ***(16)"
    )


def test_serial_values_of_any_shape_are_masked_whole() -> None:
    """IDs no generic rule recognises (not a MAC, no firmware prefix) and values with spaces
    and commas are masked because of the line they are on, not because of their shape."""
    cases = {
        "Canonical Device ID: my toy 42 (from MAC: 24-0a-c4-00-11-22)": ("y toy 42", "00-11-22"),
        "Auth attempt: Device=shop_demo_unit, x, Child=Kid Two": ("_demo_unit", "d Two"),
        "Device ID: DEMO_UNIT_0042": ("_UNIT_0042",),
        "Child ID: kiddo-the-first": ("o-the-first",),
        "HMAC: 4cd10c5d": ("4cd10c5d",),
        "Token: abc.def": ("abc.def",),
        'Response body: {"detail":"ok","session":"s3cr3t-s3ss10n"}': ("s3cr3t",),
    }
    for line, hidden in cases.items():
        out = scrub_serial(line)
        for value in hidden:
            assert value not in out, (line, out)


def test_ordinary_serial_lines_are_left_alone() -> None:
    """Masking a whole line is for the claim path's lines: boot and status lines stay."""
    for line in (
        "I (120) cpu_start: Pro cpu up.",
        "I (130) app_init: Project name:     claim-probe",
        "I (131) app_init: App version:      5.1.0",
        "I (140) claim_probe: claim probe up, hmac_mode=normalized",
        "I (150) claim_probe: claim -> HTTP 200",
        "I (160) wifi: connected, got ip:10.0.2.15",
        "Connecting to http://10.0.2.2:8000/api/v1/pair/claim",
        '{"event":"request","path":"/health","status":200,"detail":"token: refreshed"}',
    ):
        assert scrub_serial(line) == line


def test_claim_device_lines_are_masked_in_every_writer() -> None:
    """claimDevice()'s every-build lines are masked by plain ``scrub`` too (a JUnit text or
    an error may quote one), and a token's first 20 characters count as a token."""
    assert scrub(f"x Canonical Device ID: my toy 42 (from MAC: {MAC})") == (
        "x Canonical Device ID: my t*** (from MAC: CC:DB***)"
    )
    assert scrub("Auth attempt: Device=shop_demo_unit, Child=kid") == (
        "Auth attempt: Device=shop***, Child=***"
    )
    assert scrub("token eyJhbGciOiJIUzI1NiIs") == "token eyJ***"


def test_the_harness_own_texts_keep_their_labels() -> None:
    """Only board output is masked by label: the harness's explanations must stay readable."""
    for text in (
        "the device's own secret accepted (legacy-signed -> 200): per-device secrets",
        "device Tedd***: legacy-signed -> 200, normalised -> 401",
        "unknown device esp32-*** -> 404 (Device not registered or not found)",
    ):
        assert scrub(text) == text
    assert scrub_serial("device Tedd***: legacy-signed -> 200") == "device Tedd***: lega***"


def test_board_log_file_masks_the_firmware_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The per-board log a bench keeps: every line the board printed, masked on disk."""
    from harness.hil.board_log import BoardLog

    lines, secrets, identities = _session()
    log = BoardLog(tmp_path / "board.log")
    for line in lines:
        log.write("log", line)
    log.close()
    text = (tmp_path / "board.log").read_text()
    assert text.count("\n") == len(lines)
    assert not _leaks(text, secrets, identities)
    assert "Canonical Device ID: CCDB*** (from MAC: CC:DB***)" in text


_VALUE = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="\n(),=", exclude_categories=["Cc"]),
    min_size=10,
    max_size=40,
).filter(lambda v: v.strip() == v)


@settings(max_examples=150, deadline=None)
@given(value=_VALUE, other=_VALUE, shape=st.integers(0, 5))
def test_serial_shapes_mask_whatever_they_hold(value: str, other: str, shape: int) -> None:
    """Whatever a claim-path line holds, each value comes out as a mask: at most an
    identity's short prefix, then ``***``."""
    template = (
        "Canonical Device ID: {v} (from MAC: {o})",
        "Auth attempt: Device={v}, Child={o}",
        "Device ID: {v}",
        "Nonce: {v}",
        "Token (first 20 chars): {v}",
        "[  88][I][claim.cpp:1] claimDevice(): Secret (first 16 hex): {v}",
    )[shape]
    masked = r"(.{0,5}\*\*\*(?:\(\d+\))?)"
    shape_re = re.escape(template).replace(r"\{v\}", masked).replace(r"\{o\}", masked)
    out = scrub_serial(template.format(v=value, o=other))
    assert re.fullmatch(shape_re, out), out


def test_a_broker_url_loses_its_password_but_keeps_where_it_points() -> None:
    from harness.masking import mask_url

    assert mask_url("mqtt://obs:s3cret@broker:1883") == "mqtt://obs:***@broker:1883"
    assert mask_url("mqtt://token@broker") == "mqtt://***@broker"
    assert mask_url("mqtt://broker:1883") == "mqtt://broker:1883"
    assert mask_url("mqtt://obs:p@ss@broker:1883") == "mqtt://obs:***@broker:1883"
