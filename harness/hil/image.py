"""Read and validate an ESP32 app image: what a board would boot, and what it says it is.

Used by the virtual board at boot (the image at 0x10000 of its flash, with
whatever follows it), by ``harness hil flash`` before flashing (checksum and
SHA-256 digest, never just ``esptool image-info``'s exit code, which is 0 for a
corrupted image) and for the "same image" skip (the descriptor's ELF SHA-256,
at app offset + 0xB0 in flash).

The checks follow the ESP32 second-stage bootloader: image magic, segment
headers within bounds (at most 16), XOR checksum seeded with 0xEF over the
segment data, the appended SHA-256 when the extended header says so, then the
``esp_app_desc_t`` magic at the start of the first segment.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import HarnessInputError

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
HEADER_SIZE = 24  # common header (8) + extended header (16)
MAX_SEGMENTS = 16
APP_DESC_OFFSET = 0x20  # first segment's data, where esp_app_desc_t lives
ELF_SHA256_OFFSET = APP_DESC_OFFSET + 144  # = 0xB0, what pytest-embedded compares
ELF_SHA256_LEN = 32
ESP32_CHIP_ID = 0


@dataclass(frozen=True)
class AppImage:
    """One app image as a bootloader sees it; ``valid`` with a ``reason`` when not."""

    valid: bool
    reason: str = ""
    version: str = ""
    project: str = ""
    idf_ver: str = ""
    compile_time: str = ""
    elf_sha256: str = ""
    size: int = 0
    segments: list[tuple[int, int]] = field(default_factory=list)  # (load address, length)
    checksum_stored: int | None = None
    checksum_computed: int | None = None
    digest_stored: str = ""
    digest_computed: str = ""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _xor(data: bytes, acc: int) -> int:
    # Fold the bytes as one big integer: fast enough for multi-MB images.
    if not data:
        return acc
    n = int.from_bytes(data, "little")
    width = len(data)
    while width > 1:
        half = (width + 1) // 2
        n = (n ^ (n >> (8 * half))) & ((1 << (8 * half)) - 1)
        width = half
    return acc ^ (n & 0xFF)


def read_app_image(data: bytes) -> AppImage:
    """Parse and check an app image; trailing bytes (rest of the flash) are ignored."""
    if len(data) < HEADER_SIZE:
        return AppImage(False, f"too short for an image header ({len(data)} bytes)")
    magic, nseg, _mode, _size_freq, _entry = struct.unpack_from("<BBBBI", data, 0)
    if magic != IMAGE_MAGIC:
        return AppImage(False, f"invalid magic byte 0x{magic:02x} (expected 0xe9)")
    if not 0 < nseg <= MAX_SEGMENTS:
        return AppImage(False, f"invalid segment count {nseg} (1..{MAX_SEGMENTS})")
    chip_id = struct.unpack_from("<H", data, 12)[0]
    if chip_id != ESP32_CHIP_ID:
        return AppImage(False, f"image is for chip id {chip_id}, not an ESP32 (0)")
    hash_appended = data[23]
    if hash_appended not in (0, 1):
        return AppImage(False, f"invalid hash_appended byte 0x{hash_appended:02x}")
    pos = HEADER_SIZE
    checksum = CHECKSUM_SEED
    segments: list[tuple[int, int]] = []
    first_segment = b""
    for i in range(nseg):
        if pos + 8 > len(data):
            return AppImage(False, f"segment {i} header beyond end of image", segments=segments)
        addr, length = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + length > len(data):
            return AppImage(
                False, f"segment {i} (0x{addr:08x}, {length} bytes) beyond end of image"
            )
        seg = data[pos : pos + length]
        if i == 0:
            first_segment = seg
        checksum = _xor(seg, checksum)
        segments.append((addr, length))
        pos += length
    pos += 15 - pos % 16  # zero padding; the checksum byte ends a 16-byte block
    if pos >= len(data):
        return AppImage(False, "image ends before its checksum byte", segments=segments)
    stored = data[pos]
    end = pos + 1
    digest_stored = digest_computed = ""
    if hash_appended:
        if end + 32 > len(data):
            return AppImage(False, "image ends before its SHA-256 digest", segments=segments)
        digest_stored = data[end : end + 32].hex()
        digest_computed = hashlib.sha256(data[:end]).hexdigest()
        end += 32
    base = AppImage(
        False,
        size=end,
        segments=segments,
        checksum_stored=stored,
        checksum_computed=checksum,
        digest_stored=digest_stored,
        digest_computed=digest_computed,
    )
    if stored != checksum:
        return _with(
            base, reason=f"Checksum failed. Calculated 0x{checksum:02x} read 0x{stored:02x}"
        )
    if digest_stored != digest_computed:
        return _with(base, reason="image hash failed - image is corrupt")
    if len(first_segment) < 256 or struct.unpack_from("<I", first_segment)[0] != APP_DESC_MAGIC:
        return _with(base, reason="no esp_app_desc_t in the first segment (not an ESP-IDF app)")
    desc = first_segment
    return _with(
        base,
        valid=True,
        version=_cstr(desc[16:48]),
        project=_cstr(desc[48:80]),
        compile_time=f"{_cstr(desc[96:112])} {_cstr(desc[80:96])}",
        idf_ver=_cstr(desc[112:144]),
        elf_sha256=desc[144:176].hex(),
    )


def _with(base: AppImage, **changes: object) -> AppImage:
    return replace(base, **changes)  # type: ignore[arg-type]


def validate_image(path: Path | str, field_name: str = "image") -> AppImage:
    """Read an image file and check it; a bad or missing one is a one-line HarnessInputError."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise HarnessInputError(field_name, f"cannot read {p}: {exc.strerror or exc}") from None
    image = read_app_image(data)
    if not image.valid:
        raise HarnessInputError(field_name, f"{p}: {image.reason}")
    if image.size != len(data):
        raise HarnessInputError(
            field_name, f"{p}: {len(data) - image.size} unexpected bytes after the image"
        )
    return image


def elf_sha256_at(flash_bytes: bytes) -> str:
    """The ELF SHA-256 from bytes read at app offset + 0xB0; empty when flash is blank."""
    raw = flash_bytes[:ELF_SHA256_LEN]
    if len(raw) < ELF_SHA256_LEN or raw == b"\xff" * ELF_SHA256_LEN:
        return ""
    return raw.hex()
