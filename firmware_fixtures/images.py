"""Small, valid ESP32 app images with a chosen version and project, built without ESP-IDF.

Tests need to flash "firmware 5.0.3 (legacy)" and "5.1.0 (normalised)" onto a
virtual board; what matters to the board and to ``harness hil flash`` is the
``esp_app_desc_t`` at the start of the first DROM segment (version, project,
ELF SHA-256) and that the image checks out (magic, checksum, SHA-256 digest).
The image is laid out exactly as ``esptool elf2image`` writes an ESP32 app:

    header (8) | extended header (16) | segments (8-byte header + data) ...
    | zero padding so the checksum byte ends a 16-byte block | checksum
    | SHA-256 of everything before it (hash_appended = 1)

Everything is deterministic in (version, project): the same inputs give the
same bytes, so a rebuilt fixture compares equal to the committed one.

CLI: ``python -m firmware_fixtures.images --version 5.0.3 --project claim_probe -o out.bin``
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
WP_PIN_DISABLED = 0xEE
ESP32_CHIP_ID = 0
MAX_REV_FULL = 399  # what ESP-IDF writes for "any ESP32 up to v3.99"
DROM_ADDR = 0x3F400020
DRAM_ADDR = 0x3FFB0000
IRAM_ADDR = 0x40080000
ENTRY_ADDR = IRAM_ADDR + 0x400
FLASH_MODE_DIO = 2
SIZE_FREQ_4MB_40MHZ = 0x20
APP_DESC_SIZE = 256
ELF_SHA256_OFFSET = 144  # inside esp_app_desc_t
DEFAULT_IDF_VER = "v5.1.2"
DEFAULT_PROJECT = "claim_probe"

FIXTURE_DIR = Path(__file__).resolve().parent / "images"
FIXTURE_VERSIONS = ("5.0.3", "5.1.0")

Corruption = Literal["checksum", "digest", "magic", "segment", "truncate", "app_desc"]
CORRUPTIONS: tuple[Corruption, ...] = (
    "checksum",
    "digest",
    "magic",
    "segment",
    "truncate",
    "app_desc",
)


@dataclass(frozen=True)
class ImageSpec:
    """What goes into the app descriptor; the rest of the image is filler."""

    version: str
    project: str = DEFAULT_PROJECT
    idf_ver: str = DEFAULT_IDF_VER
    time: str = "00:00:00"
    date: str = "Jan  1 2026"
    secure_version: int = 0


def _cstr(value: str, size: int, field: str) -> bytes:
    raw = value.encode()
    if len(raw) >= size:
        raise ValueError(f"{field} {value!r} does not fit in {size - 1} bytes")
    return raw.ljust(size, b"\0")


def fake_elf_sha256(spec: ImageSpec) -> bytes:
    """Stands in for the ELF's SHA-256: deterministic in the descriptor's identity."""
    return hashlib.sha256(f"claim-probe-elf\0{spec.project}\0{spec.version}".encode()).digest()


def app_desc(spec: ImageSpec) -> bytes:
    """``esp_app_desc_t`` (256 bytes) as ESP-IDF lays it out."""
    out = struct.pack("<IIII", APP_DESC_MAGIC, spec.secure_version, 0, 0)
    out += _cstr(spec.version, 32, "version")
    out += _cstr(spec.project, 32, "project")
    out += _cstr(spec.time, 16, "time")
    out += _cstr(spec.date, 16, "date")
    out += _cstr(spec.idf_ver, 32, "idf_ver")
    out += fake_elf_sha256(spec)
    out = out.ljust(APP_DESC_SIZE, b"\0")  # reserv2[20], min/max efuse blk rev, mmu page
    assert len(out) == APP_DESC_SIZE
    return out


def _filler(spec: ImageSpec, label: str, size: int) -> bytes:
    """Deterministic bytes that look like code/data, distinct per version."""
    seed = f"{label}\0{spec.project}\0{spec.version}".encode()
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    return out[:size]


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def xor_checksum(chunks: Sequence[bytes], seed: int = CHECKSUM_SEED) -> int:
    """The image checksum: XOR of every segment data byte, seeded with 0xEF."""
    acc = seed
    for chunk in chunks:
        # XOR of a long byte string via int arithmetic, folded to one byte.
        if not chunk:
            continue
        n = int.from_bytes(chunk, "little")
        width = len(chunk)
        while width > 1:
            half = (width + 1) // 2
            n ^= n >> (8 * half)
            n &= (1 << (8 * half)) - 1
            width = half
        acc ^= n & 0xFF
    return acc


def build_image(spec: ImageSpec) -> bytes:
    """A complete, valid ESP32 app image (a few KB)."""
    segments = [
        (DROM_ADDR, _pad4(app_desc(spec) + _filler(spec, "rodata", 768))),
        (DRAM_ADDR, _pad4(_filler(spec, "dram", 256))),
        (IRAM_ADDR, _pad4(_filler(spec, "iram", 1536))),
    ]
    out = bytearray(
        struct.pack(
            "<BBBBI", IMAGE_MAGIC, len(segments), FLASH_MODE_DIO, SIZE_FREQ_4MB_40MHZ, ENTRY_ADDR
        )
    )
    out += struct.pack(
        "<BBBBHBHH4BB",
        WP_PIN_DISABLED,
        0,
        0,
        0,
        ESP32_CHIP_ID,
        0,
        0,
        MAX_REV_FULL,
        0,
        0,
        0,
        0,
        1,  # hash_appended
    )
    for addr, data in segments:
        out += struct.pack("<II", addr, len(data)) + data
    out += b"\0" * (15 - len(out) % 16)
    out.append(xor_checksum([d for _, d in segments]))
    out += hashlib.sha256(out).digest()
    return bytes(out)


def _refresh_digest(data: bytearray) -> None:
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()


def corrupt_image(data: bytes, how: Corruption) -> bytes:
    """A copy of a valid image broken in one named way, for the bad-image tests.

    ``checksum``: wrong checksum byte, digest recomputed (only the checksum fails);
    ``digest``: wrong appended SHA-256; ``magic``: not an image at all;
    ``segment``: one data byte flipped (checksum and digest fail, like a bad flash);
    ``truncate``: the image cut short; ``app_desc``: descriptor magic broken,
    checksum and digest recomputed (a valid image that is not an ESP-IDF app).
    """
    out = bytearray(data)
    if how == "checksum":
        out[-33] ^= 0x5A
        _refresh_digest(out)
    elif how == "digest":
        out[-1] ^= 0xFF
    elif how == "magic":
        out[0] = 0x00
    elif how == "segment":
        out[0x20 + APP_DESC_SIZE + 7] ^= 0x01
    elif how == "truncate":
        del out[len(out) // 2 :]
    elif how == "app_desc":
        # Flip one magic byte and the same bit elsewhere in the segment, so the XOR stays.
        out[0x20] ^= 0x01
        out[0x20 + APP_DESC_SIZE] ^= 0x01
        _refresh_digest(out)
    else:
        raise ValueError(f"unknown corruption {how!r}; one of {', '.join(CORRUPTIONS)}")
    return bytes(out)


def fixture_path(version: str, project: str = DEFAULT_PROJECT) -> Path:
    return FIXTURE_DIR / f"{project}-{version}.bin"


def write_fixtures() -> list[Path]:
    """(Re)write the committed fixture images."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for version in FIXTURE_VERSIONS:
        path = fixture_path(version)
        path.write_bytes(build_image(ImageSpec(version)))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_fixtures.images", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--version", help="app version for esp_app_desc_t, e.g. 5.0.3")
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    parser.add_argument("--idf-ver", default=DEFAULT_IDF_VER)
    parser.add_argument("--corrupt", choices=CORRUPTIONS, help="break the image in this way")
    parser.add_argument("-o", "--output", type=Path, help="where to write the image")
    parser.add_argument(
        "--fixtures", action="store_true", help="rewrite firmware_fixtures/images/*.bin"
    )
    args = parser.parse_args(argv)
    if args.fixtures:
        for path in write_fixtures():
            print(path)
        return 0
    if not args.version or not args.output:
        parser.error("--version and -o/--output are required (or --fixtures)")
    try:
        data = build_image(ImageSpec(args.version, args.project, args.idf_ver))
    except ValueError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 2
    if args.corrupt:
        data = corrupt_image(data, args.corrupt)
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data)} bytes, {args.project} {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
