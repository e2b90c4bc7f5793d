"""The Signer seam: who computes a device's OOB secret and claim HMAC.

A device does not know whether its signatures come from the Python core, the
C signer the firmware uses (host-built, loaded through ctypes) or a board on a
serial line; it only holds a ``Signer``. Every signer accepts and refuses the
same inputs with the same ``ProtocolError``, so swapping one for another never
changes what a scenario observes except through a real disagreement.

Input rules shared by all signers (the firmware's bounded buffers):
IDs up to 128 UTF-8 bytes, surrounding whitespace included, no NUL; nonces of
0..64 hex characters of either case, even length. The server's 16..64 rule is
the server's to enforce, so a harness can still sign a short nonce on purpose.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from harness.errors import HarnessInputError, ProtocolError
from harness.protocol import derive_oob_v5, sign_claim
from harness.protocol.signing import SIGNING_MODES, SigningMode

ID_MAX_BYTES = 128
NONCE_HEX_MAX = 64
OOB_BYTES = 32

ROOT = Path(__file__).resolve().parents[1]
SIGNER_SRC = ROOT / "firmware_fixtures" / "signer"
DEFAULT_BUILD_DIR = ROOT / "firmware_fixtures" / "build"
CLI_NAME = "claim_signer"
LIB_NAME = "libclaimsigner.so"

_HEX = re.compile(r"[0-9a-fA-F]*")

# The C core's return codes (claim_signer.h) and the reasons every signer gives.
_C_OK = 0
_C_ID_TOO_LONG = -2
_C_REASONS: dict[int, tuple[str, str]] = {
    -1: ("signer", "missing argument"),
    -3: ("nonce", "is not hexadecimal"),
    -4: ("nonce", "odd length; must be whole bytes"),
    -5: ("nonce", f"longer than {NONCE_HEX_MAX} hex characters"),
    -6: ("mode", "must be legacy or normalized"),
    -7: ("signer", "mbedtls error"),
}
_C_MODES: dict[str, int] = {"legacy": 0, "normalized": 1}
_ID_TOO_LONG = f"longer than {ID_MAX_BYTES} bytes"


@runtime_checkable
class Signer(Protocol):
    """Derives a device's v5 OOB secret and signs its claims, as some firmware would."""

    name: str

    def derive(self, device_id: str) -> str:
        """The v5 OOB secret for ``device_id`` exactly as held: 64 upper-case hex."""
        ...

    def sign(
        self, device_id: str, child_id: str, nonce_hex: str, oob: bytes, mode: SigningMode
    ) -> str:
        """The claim HMAC: 64 lower-case hex characters."""
        ...


def _check_id(value: str, field: str) -> bytes:
    raw = value.encode()
    if b"\0" in raw:
        raise ProtocolError(field, "contains a NUL character")
    if len(raw) > ID_MAX_BYTES:
        raise ProtocolError(field, _ID_TOO_LONG)
    return raw


def _check_oob(oob: bytes) -> None:
    if not isinstance(oob, bytes | bytearray) or len(oob) != OOB_BYTES:
        size = len(oob) if isinstance(oob, bytes | bytearray) else type(oob).__name__
        raise ProtocolError("oob_secret", f"must be {OOB_BYTES} bytes, got {size}")


def _check_nonce_bytes(nonce_hex: str) -> bytes:
    """Non-ASCII or NUL can never be hex; refusing them first keeps C and Python in step."""
    if not nonce_hex.isascii() or "\0" in nonce_hex:
        raise ProtocolError(*_C_REASONS[-3])
    return nonce_hex.encode()


def _check_mode(mode: str) -> None:
    if mode not in SIGNING_MODES:
        raise ProtocolError("mode", "must be legacy or normalized")


class PythonSigner:
    """The Python protocol core behind the seam, with the firmware's input bounds."""

    name = "python"

    def derive(self, device_id: str) -> str:
        _check_id(device_id, "device_id")
        return derive_oob_v5(device_id)

    def sign(
        self, device_id: str, child_id: str, nonce_hex: str, oob: bytes, mode: SigningMode
    ) -> str:
        _check_oob(oob)
        _check_mode(mode)
        _check_id(device_id, "device_id")
        _check_id(child_id, "child_id")
        _check_nonce_bytes(nonce_hex)
        # Same order as the C core: length, parity, then characters.
        if len(nonce_hex) > NONCE_HEX_MAX:
            raise ProtocolError(*_C_REASONS[-5])
        if len(nonce_hex) % 2:
            raise ProtocolError(*_C_REASONS[-4])
        if not _HEX.fullmatch(nonce_hex):
            raise ProtocolError(*_C_REASONS[-3])
        return sign_claim(device_id, child_id, nonce_hex, bytes(oob), mode)


@dataclass(frozen=True)
class CSignerBuild:
    """Where the host build of the C signer put its CLI and shared library."""

    cli: Path
    library: Path


def _sources() -> list[Path]:
    """The C sources and Makefile; none when installed without them (use the outputs as are)."""
    if not SIGNER_SRC.is_dir():
        return []
    return [p for p in SIGNER_SRC.iterdir() if p.suffix in (".c", ".h") or p.name == "Makefile"]


def _is_stale(outputs: list[Path]) -> bool:
    """Missing output, or a source newer than the oldest output."""
    if not all(p.exists() for p in outputs):
        return True
    oldest = min(p.stat().st_mtime_ns for p in outputs)
    return any(src.stat().st_mtime_ns > oldest for src in _sources())


def _build_error(stderr: str) -> HarnessInputError:
    """One line that says what to install, or the compiler's first error."""
    hint = "apt-get install gcc make libmbedtls-dev"
    if ("mbedtls/" in stderr and "No such file" in stderr) or "-lmbedcrypto" in stderr:
        return HarnessInputError("c_signer", f"mbedtls development files not found ({hint})")
    lines = [ln.strip() for ln in stderr.splitlines() if "error" in ln.lower()]
    detail = lines[0] if lines else (stderr.strip().splitlines() or ["make failed"])[-1]
    return HarnessInputError("c_signer", f"build failed: {detail}")


def build_c_signer(build_dir: Path | None = None, *, force: bool = False) -> CSignerBuild:
    """Build the C signer with make if missing or stale; safe across parallel processes."""
    out = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    result = CSignerBuild(cli=out / CLI_NAME, library=out / LIB_NAME)
    outputs = [result.cli, result.library]
    if not force and not _is_stale(outputs):
        return result
    if not (SIGNER_SRC / "Makefile").exists():
        raise HarnessInputError("c_signer", f"sources not found in {SIGNER_SRC}")
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise HarnessInputError(
                "c_signer", f"{tool} not found (apt-get install gcc make libmbedtls-dev)"
            )
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may have built it meanwhile
        if force or _is_stale(outputs):
            cmd = ["make", "-s", "-C", str(SIGNER_SRC), f"BUILD_DIR={out.resolve()}"]
            if force:
                cmd.append("-B")
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if proc.returncode != 0:
                raise _build_error(proc.stderr)
    return result


class CSigner:
    """The firmware's C signer (mbedtls) through ctypes: same bytes as the board computes."""

    name = "c"

    def __init__(self, library: Path | str) -> None:
        try:
            lib = ctypes.CDLL(os.fspath(library))
        except OSError as exc:
            raise HarnessInputError("c_signer", f"cannot load {library}: {exc}") from None
        lib.claim_derive_oob.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.claim_derive_oob.restype = ctypes.c_int
        lib.claim_sign.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
        ]
        lib.claim_sign.restype = ctypes.c_int
        self._lib = lib
        self.library = Path(library)

    @classmethod
    def build(cls, build_dir: Path | None = None) -> CSigner:
        """Build (if missing or stale) and load the host shared library."""
        return cls(build_c_signer(build_dir).library)

    def derive(self, device_id: str) -> str:
        raw = _check_id(device_id, "device_id")  # NUL would silently truncate in C
        out = ctypes.create_string_buffer(65)
        rc = self._lib.claim_derive_oob(raw, out)
        if rc != _C_OK:
            raise self._error(rc, device_id, "")
        return out.value.decode()

    def sign(
        self, device_id: str, child_id: str, nonce_hex: str, oob: bytes, mode: SigningMode
    ) -> str:
        _check_oob(oob)  # C reads exactly 32 bytes from this pointer
        device = device_id.encode()
        child = child_id.encode()
        for raw, field in ((device, "device_id"), (child, "child_id")):
            if b"\0" in raw:
                raise ProtocolError(field, "contains a NUL character")
        nonce = _check_nonce_bytes(nonce_hex)
        out = ctypes.create_string_buffer(65)
        rc = self._lib.claim_sign(device, child, nonce, bytes(oob), _C_MODES.get(mode, -1), out)
        if rc != _C_OK:
            raise self._error(rc, device_id, child_id)
        return out.value.decode()

    @staticmethod
    def _error(rc: int, device_id: str, child_id: str) -> ProtocolError:
        if rc == _C_ID_TOO_LONG:
            too_long = len(device_id.encode()) > ID_MAX_BYTES
            return ProtocolError("device_id" if too_long else "child_id", _ID_TOO_LONG)
        field, reason = _C_REASONS.get(rc, ("signer", f"C signer error {rc}"))
        return ProtocolError(field, reason)
