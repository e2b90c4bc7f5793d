"""A small provisioned world for server tests: devices, children, and how firmware signs.

Every ID carries a per-server tag so many servers can share one PostgreSQL
database and one Redis without seeing each other's devices or nonces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.protocol import derive_oob_v5, new_nonce, sign_claim
from harness.protocol.signing import SigningMode
from harness.server.seed import Seed, SeedChild, SeedDevice


def random_oob() -> str:
    return os.urandom(32).hex().upper()


@dataclass(frozen=True)
class World:
    tag: str
    lower: str  # provisioned, lower-case ID: signs the same in legacy and normalised mode
    lower_oob: str
    upper: str  # provisioned, firmware holds it upper-case (v5 MAC style)
    upper_oob: str
    disabled: str
    disabled_oob: str
    child: str
    child_off: str

    @classmethod
    def make(cls, tag: str) -> World:
        t = tag.lower()
        upper = f"DEV-{t}-UPPER".upper()
        return cls(
            tag=t,
            lower=f"teddy-esp32-{t}-a",
            lower_oob=random_oob(),
            upper=upper,
            upper_oob=derive_oob_v5(upper),  # factory secret derived from the ID as held
            disabled=f"teddy-esp32-{t}-off",
            disabled_oob=random_oob(),
            child=f"child-{t}",
            child_off=f"child-{t}-gone",
        )

    def seed(self) -> Seed:
        return Seed(
            devices=(
                SeedDevice(self.lower, self.lower_oob),
                SeedDevice(self.upper, self.upper_oob),
                SeedDevice(self.disabled, self.disabled_oob, is_active=False),
            ),
            children=(SeedChild(self.child), SeedChild(self.child_off, is_active=False)),
        )

    def unknown_prefixed(self, name: str) -> str:
        return f"esp32-{self.tag}-{name}"

    def secrets(self) -> list[str]:
        return [self.lower_oob, self.upper_oob, self.disabled_oob]


def claim_body(
    device_id: str,
    child_id: str,
    oob_hex: str,
    mode: SigningMode = "legacy",
    nonce: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The body firmware sends: HMAC over the IDs as it holds them (legacy) or normalised."""
    nonce = nonce or new_nonce()
    return {
        "device_id": device_id,
        "child_id": child_id,
        "nonce": nonce,
        "hmac_hex": sign_claim(device_id, child_id, nonce, bytes.fromhex(oob_hex), mode),
        **extra,
    }
