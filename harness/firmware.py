"""Firmware profiles: what the real firmware's two claim paths send, and what they do next.

The public firmware (CONTRACT.md section 1) has two claim paths, and they differ
in everything a server sees: the ID they derive from the MAC, the string whose
v5 derivation is their key, the body and headers, and what they do after each
answer. A cohort names one (``firmware = "live"`` or ``"claim-device"``) and its
devices then send exactly that; the runner follows the profile's attempts and
back-off, and compat predicts with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessInputError

LIVE_USER_AGENT = "AI-Teddy-Bear-ESP32/2.0.0"


@dataclass(frozen=True, slots=True)
class FirmwareProfile:
    """One claim path: identity, request shape and retry habits."""

    name: str
    # The request: firmware_version in the body, and the User-Agent (None: per version).
    # Both send Content-Type: application/json and Connection: close, which the harness's
    # fresh-connection transport (the default) sends for every claim.
    body_has_version: bool
    user_agent: str | None
    # Retry habits: the same body ``resends`` more times while no HTTP status comes back,
    # then fresh attempts (new nonce) after any failure, base * 2^(n-1) +- jitter apart.
    resends: int = 0
    resend_delay_s: float = 2.0
    attempts: int = 1
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    jitter: float = 0.25
    # The answers that start a fresh attempt (None: every failure, 4xx included, as the
    # live path does).
    retry_on: frozenset[int] | None = None

    def retries(self, status: int | None) -> bool:
        """Does a device that got ``status`` (None: no HTTP answer) try again?"""
        if status == 200:
            return False
        if status is None and self.resends:
            return True
        return self.attempts > 1 and (status is None or self.retry_on is None
                                      or status in self.retry_on)  # fmt: skip

    def device_id(self, mac: str) -> str:
        """The ID it sends, from the MAC as 12 upper-case hex digits."""
        if self.name == "live":
            return "teddy-esp32-" + mac.lower()
        return mac.upper()

    def key_id(self, mac: str) -> str:
        """The string whose v5 derivation is its key when no secret was provisioned.

        The live path derives from ``Teddy-ESP32-<MAC bytes 2..5>``, not from the
        ID it sends: the finding of CONTRACT.md section 7.
        """
        if self.name == "live":
            return "Teddy-ESP32-" + mac.upper()[4:]
        return self.device_id(mac)

    def headers(self, firmware_version: str) -> tuple[tuple[str, str], ...]:
        agent = self.user_agent or f"ESP32-TeddyBear/{firmware_version}"
        return (("User-Agent", agent),)

    def backoff_s(self, attempt: int, unit: float) -> float:
        """The wait before attempt ``attempt + 1`` (``unit`` in [-1, 1] picks the jitter)."""
        base = min(self.backoff_base_s * 2 ** (attempt - 1), self.backoff_cap_s)
        return max(0.0, base * (1.0 + self.jitter * unit))


CLAIM_DEVICE = FirmwareProfile(
    "claim-device",
    body_has_version=True,
    user_agent=None,
)
LIVE = FirmwareProfile(
    "live",
    body_has_version=False,
    user_agent=LIVE_USER_AGENT,
    resends=2,  # POSTed up to 3 times in all (jwt_manager.cpp's loop of 3), 2 s apart
    attempts=5,
)
FIRMWARES: dict[str, FirmwareProfile] = {f.name: f for f in (CLAIM_DEVICE, LIVE)}

# Answers that say the server (or its stores) is down rather than "no" to this claim.
OUTAGE_STATUSES = frozenset({502, 503, 504})
# The habits of a cohort that names no firmware: the live path's numbers, for failures an
# outage causes only (no answer, 502/503/504); a 4xx ends the episode as its scenario says,
# so the fleet's verdicts are those of a healthy server. A cohort may name other habits.
OUTAGE = FirmwareProfile(
    "outage",
    body_has_version=True,
    user_agent=None,
    resends=LIVE.resends,
    resend_delay_s=LIVE.resend_delay_s,
    attempts=LIVE.attempts,
    retry_on=OUTAGE_STATUSES,
)
# ``habits =`` in a fleet file; "none" is the harsh choice: no resend, no back-off, a
# failed device's lane goes straight on (a fleet hammering a dead server).
HABITS: dict[str, FirmwareProfile | None] = {**FIRMWARES, "outage": OUTAGE, "none": None}


def habits_for(firmware: str | None, habits: str | None) -> FirmwareProfile | None:
    """A cohort's retry habits: those it names, else its firmware's, else ``OUTAGE``."""
    if habits is not None:
        return HABITS[habits]
    return FIRMWARES[firmware] if firmware is not None else OUTAGE


def firmware_named(name: str, where: str = "firmware") -> FirmwareProfile:
    found = FIRMWARES.get(str(name).strip().lower())
    if found is None:
        raise HarnessInputError(where, f"unknown firmware {name!r} (known: {', '.join(FIRMWARES)})")
    return found
