"""OOB secrets: the firmware v5 derivation, and parsing a secret carried as hex.

The three schemes seen in the field are a cohort setting (``oob`` in a fleet
file): ``v5-derived`` uses ``derive_oob_v5`` over the ID as held, ``provisioned``
a per-device random secret and ``static`` one secret for all; the fleet model
(``harness.fleet.model.Fleet._secret``) applies them, deterministically from
the fleet's seed, and ``provision export`` writes them for the server.
"""

from __future__ import annotations

import hashlib

from harness.errors import ProtocolError

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
