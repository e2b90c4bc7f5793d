"""The committed golden vectors: produced by the C signer, agreed with by the Python core."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessInputError
from harness.protocol import OOB_SALT, derive_oob_v5, normalize_id, sign_claim
from harness.signer import CSigner, CSignerBuild, build_c_signer
from tests.support import ROOT, require_binary

GOLDEN = ROOT / "firmware_fixtures" / "vectors" / "golden.json"
CASES: list[dict[str, Any]] = json.loads(GOLDEN.read_text())["cases"]

# Straight from the contract (section 1), not from any code under test.
CONTRACT_EXAMPLES = {
    "CCDBA795BAA4": "1422C407BEF8AD2F9725498C1CBAB542CC9DB6D6E5B1884FCFE9DCCC169CE090",
    "ccdba795baa4": "99629CF2F66A557E0C3AB36A6D71F3F4F5D1DDBD8A3BA31753359698C497FE23",
}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_committed_vector_matches_python_core(case: dict[str, Any]) -> None:
    oob = bytes.fromhex(case["oob_secret"])
    assert derive_oob_v5(case["device_id"]) == case["oob_secret"]
    args = (case["device_id"], case["child_id"], case["nonce"], oob)
    assert sign_claim(*args, "legacy") == case["hmac_legacy"]
    assert sign_claim(*args, "normalized") == case["hmac_normalized"]


def test_hex_casing_follows_the_contract() -> None:
    for case in CASES:
        assert len(case["oob_secret"]) == 64 and case["oob_secret"] == case["oob_secret"].upper()
        for key in ("hmac_legacy", "hmac_normalized"):
            assert len(case[key]) == 64 and case[key] == case[key].lower()


def test_contract_examples_are_in_the_vectors() -> None:
    derived = {c["device_id"]: c["oob_secret"] for c in CASES}
    for device_id, oob in CONTRACT_EXAMPLES.items():
        assert derived[device_id] == oob


def test_vectors_cover_the_edge_cases() -> None:
    """Guards the list itself: dropping an edge case from host_main.c fails here."""
    stripped = [c["device_id"].strip() for c in CASES]
    assert {8, 64} <= {len(d) for d in stripped}
    assert {16, 64} <= {len(c["nonce"]) for c in CASES}
    assert 64 in {len(c["child_id"].strip()) for c in CASES}
    assert any(d != d.lower() and d != d.upper() for d in stripped), "mixed-case ID"
    assert any(c["nonce"] != c["nonce"].lower() for c in CASES), "upper-case hex nonce"
    assert any(c["device_id"] != c["device_id"].strip() for c in CASES), "padded device ID"
    assert any(c["child_id"] != c["child_id"].strip() for c in CASES), "padded child ID"
    assert any(c["device_id"] == "Teddy-ESP32-0001" for c in CASES)
    assert any(c["device_id"] == "esp32-a1b2c3" for c in CASES)
    assert len({c["name"] for c in CASES}) == len(CASES)


def test_modes_differ_exactly_when_normalisation_changes_an_id() -> None:
    for case in CASES:
        unchanged = all(normalize_id(case[k]) == case[k] for k in ("device_id", "child_id"))
        same = case["hmac_legacy"] == case["hmac_normalized"]
        assert same == unchanged, case["name"]


def test_regenerating_reproduces_the_committed_file(c_build: CSignerBuild) -> None:
    proc = subprocess.run(
        [str(c_build.cli), "vectors"], capture_output=True, timeout=30, check=True
    )
    assert proc.stdout == GOLDEN.read_bytes()


def test_vectors_file_is_canonical_json() -> None:
    """The C writer escapes like json.dumps, so the file round-trips unchanged."""
    text = GOLDEN.read_text()
    data = json.loads(text)
    assert json.dumps(data, indent=2) + "\n" == text
    assert data["salt"] == OOB_SALT


def test_build_rebuilds_stale_outputs(tmp_path: Path) -> None:
    """make builds into a fresh directory, and an output older than its sources is rebuilt."""
    require_binary("gcc")
    require_binary("make")
    build = build_c_signer(tmp_path)
    assert os.access(build.cli, os.X_OK) and build.library.stat().st_size > 0
    os.utime(build.library, ns=(0, 0))  # pretend the library predates the sources
    rebuilt = build_c_signer(tmp_path)
    assert rebuilt.library.stat().st_mtime_ns > 0
    check = subprocess.run(
        ["make", "-q", "-C", str(ROOT / "firmware_fixtures" / "signer"), f"BUILD_DIR={tmp_path}"],
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, "make considers a fresh build out of date"


def test_missing_toolchain_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(HarnessInputError) as exc:
        build_c_signer(tmp_path / "build")
    text = str(exc.value)
    assert text.startswith("c_signer: make not found") and "libmbedtls-dev" in text
    assert "\n" not in text


def test_unloadable_library_is_one_clear_line(tmp_path: Path) -> None:
    bogus = tmp_path / "libclaimsigner.so"
    bogus.write_text("not a shared object")
    with pytest.raises(HarnessInputError, match=r"^c_signer: cannot load"):
        CSigner(bogus)
