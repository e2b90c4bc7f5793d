"""OOB secret schemes: the v5 derivation, per-device provisioned secrets, one static secret."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from harness.errors import ProtocolError
from harness.protocol.identity import normalize_id

OOB_SALT = "ai-teddy-bear-oob-secret-v1"
OOB_BYTES = 32


def derive_oob_v5(device_id: str) -> str:
    """Firmware v5 derivation over the ID *exactly as held*; upper-case hex (64 chars)."""
    h1 = hashlib.sha256(f"{device_id}:{OOB_SALT}".encode()).hexdigest()
    return hashlib.sha256(f"{h1}{OOB_SALT}".encode()).hexdigest().upper()


def parse_oob_hex(value: object, field: str = "oob_secret") -> bytes:
    """Parse an OOB secret carried as 64 hex characters (either case) into 32 bytes."""
    if not isinstance(value, str):
        raise ProtocolError(field, f"must be a hex string, got {type(value).__name__}")
    text = value.strip()
    if len(text) != 2 * OOB_BYTES:
        raise ProtocolError(field, f"must be {2 * OOB_BYTES} hex characters, got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ProtocolError(field, "is not hexadecimal") from None


class OobScheme(Protocol):
    """Where a device's OOB secret comes from; the key of its claim HMAC."""

    name: str

    def secret_for(self, device_id: str) -> bytes:
        """The secret for a device ID as the firmware holds it."""
        ...


class V5DerivedOob:
    """Firmware v5: derived from the ID as held (so case matters)."""

    name = "v5-derived"

    def secret_for(self, device_id: str) -> bytes:
        return bytes.fromhex(derive_oob_v5(device_id))


class StaticOob:
    """One secret shared by every device (seen in one v5 build for auto-registered devices)."""

    name = "static"

    def __init__(self, secret: bytes) -> None:
        if len(secret) != OOB_BYTES:
            raise ProtocolError("oob_secret", f"must be {OOB_BYTES} bytes, got {len(secret)}")
        self.secret = secret

    def secret_for(self, device_id: str) -> bytes:
        return self.secret


class ProvisionedOob:
    """Factory-provisioned random secrets: one row per device, keyed case-insensitively."""

    name = "provisioned"

    def __init__(self, secrets: Mapping[str, bytes]) -> None:
        self.secrets = {normalize_id(k): v for k, v in secrets.items()}

    def secret_for(self, device_id: str) -> bytes:
        try:
            return self.secrets[normalize_id(device_id)]
        except KeyError:
            raise ProtocolError(
                "device_id", f"no provisioned OOB secret for {device_id!r}"
            ) from None
