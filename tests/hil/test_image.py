"""The image builder makes images esptool itself accepts, and our reader agrees with esptool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from esptool.bin_image import LoadFirmwareImage

from firmware_fixtures.images import (
    CORRUPTIONS,
    FIXTURE_VERSIONS,
    ImageSpec,
    build_image,
    corrupt_image,
    fake_elf_sha256,
    fixture_path,
)
from harness.errors import HarnessInputError
from harness.hil.image import ELF_SHA256_OFFSET, elf_sha256_at, read_app_image, validate_image


def _esptool_verdict(path: Path) -> tuple[bool, bool]:
    """(checksum ok, digest ok) according to esptool's own image classes."""
    img = LoadFirmwareImage("esp32", str(path))
    return img.checksum == img.calculate_checksum(), img.stored_digest == img.calc_digest


@pytest.mark.parametrize("version", ["5.0.3", "5.1.0", "6.2.0-rc1"])
def test_built_image_is_valid_for_esptool(tmp_path: Path, version: str) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(build_image(ImageSpec(version, "teddy_fw")))
    assert _esptool_verdict(path) == (True, True)
    img = LoadFirmwareImage("esp32", str(path))
    assert img.segments[0].addr == 0x3F400020
    info = read_app_image(path.read_bytes())
    assert info.valid, info.reason
    assert (info.version, info.project) == (version, "teddy_fw")
    assert info.elf_sha256 == fake_elf_sha256(ImageSpec(version, "teddy_fw")).hex()


def test_image_info_prints_version(tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    out = subprocess.run(
        [sys.executable, "-m", "firmware_fixtures.images", "--version", "5.0.3", "-o", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "5.0.3" in out.stdout
    info = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32", "image-info", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "App version: 5.0.3" in info
    assert "Project name: claim_probe" in info
    assert "Checksum: " in info and "(valid)" in info


@pytest.mark.parametrize("version", FIXTURE_VERSIONS)
def test_committed_fixtures_match_the_builder(version: str) -> None:
    assert fixture_path(version).read_bytes() == build_image(ImageSpec(version))


def test_versions_differ_in_elf_sha() -> None:
    a, b = (read_app_image(fixture_path(v).read_bytes()) for v in FIXTURE_VERSIONS)
    assert a.elf_sha256 != b.elf_sha256
    data = fixture_path("5.1.0").read_bytes()
    assert elf_sha256_at(data[ELF_SHA256_OFFSET:]) == b.elf_sha256
    assert elf_sha256_at(b"\xff" * 64) == ""


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corruptions_are_caught_like_esptool(tmp_path: Path, how: str) -> None:
    good = build_image(ImageSpec("5.0.3"))
    bad = corrupt_image(good, how)  # type: ignore[arg-type]
    path = tmp_path / "bad.bin"
    path.write_bytes(bad)
    info = read_app_image(bad)
    assert not info.valid and info.reason
    if how in ("checksum", "digest", "segment"):
        # esptool loads these and reports the same failure we do.
        ck_ok, dg_ok = _esptool_verdict(path)
        assert ck_ok == (info.checksum_stored == info.checksum_computed)
        assert dg_ok == (info.digest_stored == info.digest_computed)
        assert not (ck_ok and dg_ok)
    with pytest.raises(HarnessInputError, match=r"bad\.bin"):
        validate_image(path)


def test_validate_image_missing_file_and_trailing_bytes(tmp_path: Path) -> None:
    with pytest.raises(HarnessInputError, match="cannot read"):
        validate_image(tmp_path / "nope.bin")
    path = tmp_path / "padded.bin"
    path.write_bytes(build_image(ImageSpec("5.0.3")) + b"junk")
    with pytest.raises(HarnessInputError, match="unexpected bytes"):
        validate_image(path)
    # On flash, what follows the image is just more flash: boot reads it fine.
    assert read_app_image(path.read_bytes()).valid
