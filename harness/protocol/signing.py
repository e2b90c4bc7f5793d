"""Nonces and the claim HMAC, legacy (IDs as held) and normalised (``strip().lower()``)."""

from __future__ import annotations

import hmac
import os
import re
from hashlib import sha256
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from harness.errors import ProtocolError
from harness.protocol.identity import normalize_id

SigningMode = Literal["legacy", "normalized"]
SIGNING_MODES: tuple[SigningMode, ...] = ("legacy", "normalized")
NONCE_HEX_LEN = (16, 64)
_HEX = re.compile(r"[0-9a-fA-F]*")


def new_nonce(nbytes: int = 16) -> str:
    """A fresh nonce as firmware makes it: random bytes, lower-case hex (32 chars)."""
    return os.urandom(nbytes).hex()


def validate_nonce(value: object, field: str = "nonce") -> str:
    """The server's nonce rule: 16..64 hex characters, even length."""
    if not isinstance(value, str):
        raise ProtocolError(field, f"must be a hex string, got {type(value).__name__}")
    lo, hi = NONCE_HEX_LEN
    if not lo <= len(value) <= hi:
        raise ProtocolError(field, f"length {len(value)} outside {lo}..{hi} hex characters")
    if len(value) % 2:
        raise ProtocolError(field, f"odd length {len(value)}; must be whole bytes")
    if not _HEX.fullmatch(value):
        raise ProtocolError(field, "is not hexadecimal")
    return value


class PrefixedHmac:
    """HMAC-SHA256 of ``prefix + message`` with key and prefix absorbed once.

    The hot path HMACs many short messages under few keys (a device's secret and
    its IDs; a server's token secret), so the key schedule is done once and each
    message costs a copy of the prepared state. Measured here per 300-byte message:
    ``hmac.digest`` 3.6 µs (key schedule every time), a copied stdlib ``hmac``
    object 2.7 µs, a copied ``cryptography`` HMAC 1.2 µs, hence ``cryptography``.
    Same bytes as ``hmac.digest(key, prefix + message, "sha256")``.
    """

    __slots__ = ("_base",)

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        self._base = crypto_hmac.HMAC(key, hashes.SHA256())
        if prefix:
            self._base.update(prefix)

    def digest(self, message: bytes) -> bytes:
        mac = self._base.copy()
        mac.update(message)
        return mac.finalize()

    def hexdigest(self, message: bytes) -> str:
        return self.digest(message).hex()


def claim_message(device_id: str, child_id: str, nonce_hex: str, mode: SigningMode) -> bytes:
    """``utf8(device_id) || utf8(child_id) || bytes(nonce)``, IDs normalised in that mode."""
    if mode == "normalized":
        device_id, child_id = normalize_id(device_id), normalize_id(child_id)
    elif mode != "legacy":
        raise ProtocolError("mode", f"must be legacy or normalized, got {mode!r}")
    return device_id.encode() + child_id.encode() + bytes.fromhex(nonce_hex)


def sign_claim(
    device_id: str, child_id: str, nonce_hex: str, oob: bytes, mode: SigningMode = "legacy"
) -> str:
    """The claim HMAC as firmware sends it: HMAC-SHA256, 64 lower-case hex characters."""
    return hmac.new(oob, claim_message(device_id, child_id, nonce_hex, mode), sha256).hexdigest()


def verify_claim_hmac(
    device_id: str, child_id: str, nonce_hex: str, oob: bytes, hmac_hex: str, mode: SigningMode
) -> bool:
    """Constant-time comparison, as the server does it (contract step 5)."""
    expected = sign_claim(device_id, child_id, nonce_hex, oob, mode)
    return hmac.compare_digest(expected, hmac_hex.lower())
