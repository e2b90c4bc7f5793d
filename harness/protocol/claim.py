"""The claim request body exactly as firmware sends it, and the server's 200 body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ProtocolError
from harness.protocol.identity import validate_child_id, validate_device_id
from harness.protocol.oob import parse_oob_hex
from harness.protocol.signing import SigningMode, sign_claim, validate_nonce

CLAIM_PATH = "/api/v1/pair/claim"
REFRESH_PATH = "/api/v1/pair/token/refresh"


def user_agent(firmware_version: str) -> str:
    """The ``User-Agent`` header the firmware sends."""
    return f"ESP32-TeddyBear/{firmware_version}"


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One claim as the device sends it. Field order is the firmware's JSON order."""

    device_id: str
    child_id: str
    nonce: str
    hmac_hex: str
    firmware_version: str | None = None
    timestamp: int | None = None

    @classmethod
    def build(
        cls,
        device_id: str,
        child_id: str,
        nonce: str,
        oob_hex: str,
        mode: SigningMode = "legacy",
        firmware_version: str | None = None,
        timestamp: int | None = None,
    ) -> ClaimRequest:
        """Validate the inputs (naming the bad field) and sign the claim."""
        validate_device_id(device_id)
        validate_child_id(child_id)
        validate_nonce(nonce)
        oob = parse_oob_hex(oob_hex, "oob")
        return cls(
            device_id,
            child_id,
            nonce,
            sign_claim(device_id, child_id, nonce, oob, mode),
            firmware_version,
            timestamp,
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "device_id": self.device_id,
            "child_id": self.child_id,
            "nonce": self.nonce,
            "hmac_hex": self.hmac_hex,
        }
        if self.firmware_version is not None:
            body["firmware_version"] = self.firmware_version
        if self.timestamp is not None:
            body["timestamp"] = self.timestamp
        return body

    def to_json(self) -> bytes:
        """Compact JSON, as ArduinoJson's ``serializeJson`` writes it."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class ClaimResponse:
    """The 200 body of a claim (contract step 9)."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    device_session_id: str
    child_profile: dict[str, Any] = field(default_factory=dict)
    device_config: dict[str, Any] = field(default_factory=dict)

    REQUIRED = (
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "device_session_id",
        "child_profile",
        "device_config",
    )

    @classmethod
    def from_dict(cls, body: object) -> ClaimResponse:
        if not isinstance(body, dict):
            raise ProtocolError("response", "body is not a JSON object")
        missing = [k for k in cls.REQUIRED if k not in body]
        if missing:
            raise ProtocolError("response", f"missing {', '.join(missing)}")
        return cls(**{k: body[k] for k in cls.REQUIRED})
