"""The oracle: what a server built and configured as declared must answer, claim by claim.

A pure function of (server profile, device facts, the send, that nonce's
history) -> ``Expectation``, plus ``judge_*`` functions that compare an
expectation with what came back. No I/O, no clocks: ``compat`` uses the same
functions to predict a configuration it did not run, and the table tests run
without a network. The profile (``harness.profiles``) says which build: v5.0,
v5-head or atomic, as deployed.

The contract (CONTRACT.md sections 2, 3 and 5), step by step, as encoded here:

1. validation on the *raw* values -> 422 (an ID with surrounding spaces, or a
   ``firmware_version`` the pattern refuses, is a 422 whatever the flags);
2. ``d, c = strip().lower()`` of both IDs;
3. Redis: down since start -> 503, except with idempotency on and
   DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE, which carries on without replay
   protection; down after the first claim -> 503 whatever the flags. Up: replay
   / idempotency keyed on ``(d, c, nonce)``, recorded *before* the HMAC check,
   so a bad HMAC burns the nonce. Idempotency on: a cached 200 for the same
   HMAC -> that body again with ``X-Idempotent-Request: true``; the nonce
   recorded with another HMAC -> 409; recorded with the same HMAC but nothing
   cached (the first failed, or is still in flight: the v5 race) -> carry on.
   Idempotency off: any reuse -> 409;
4. device lookup by ``d``; missing: auto-register ``teddy-esp32-``/``esp32-``
   prefixes (by the flag on v5.0, always on v5-head) with the secret derived
   from the lower-case ``d`` (or the profile's static one), else 404; disabled
   -> 403 (v5-head: the lookup skips it, 404, or 500 for a prefixed ID);
5. HMAC over the IDs as received, or over ``d``/``c`` with NORMALIZE_IDS_IN_HMAC,
   with the device's secret (v5-head: the one static secret) -> 401;
6. child lookup by ``c`` -> 404 when unknown or inactive (v5-head outside
   production: an unknown or inactive child gets a made-up profile);
7. -> 200 with tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from harness.profiles import ServerProfile
from harness.protocol import normalize_id
from harness.protocol.identity import claim_body_refusal

HmacKind = Literal["good", "bad", "other"]
IDEMPOTENT_HEADER = "x-idempotent-request"
CORRELATION_HEADER = "x-correlation-id"
INVALID_BODY = 422

__all__ = [
    "CORRELATION_HEADER",
    "IDEMPOTENT_HEADER",
    "DeviceFacts",
    "Expectation",
    "PairExpectation",
    "Sent",
    "ServerProfile",
    "check_category",
    "device_status",
    "expect_concurrent",
    "expect_send",
    "judge_pair",
    "judge_send",
]


class DeviceFacts(Protocol):
    """What the oracle needs to know about a device (``VirtualDevice`` has all of it).

    ``firmware_version`` is read with ``getattr`` (None: the body has none).
    """

    device_id: str
    child_id: str
    oob: bytes
    signing: str
    provisioned: bool
    active: bool
    child_state: str


@dataclass(frozen=True, slots=True)
class Sent:
    """One earlier send with the same nonce and what came back (the device's claim history)."""

    hmac: HmacKind
    status: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Expectation:
    """The acceptable outcomes of one send.

    ``replay``: the answer must be the cached first answer (same body, header
    ``X-Idempotent-Request: true``). ``why`` is a short human reason.
    """

    statuses: frozenset[int]
    replay: bool = False
    why: str = ""

    def describe(self) -> str:
        codes = "/".join(str(s) for s in sorted(self.statuses))
        extra = " (same body, X-Idempotent-Request: true)" if self.replay else ""
        return f"{codes}{extra}: {self.why}" if self.why else f"{codes}{extra}"


@dataclass(frozen=True, slots=True)
class PairExpectation:
    """Two identical sends in flight together.

    ``outcomes``: acceptable status pairs, order-free (each sorted). ``same_token``:
    when both are 200 they must carry the same access token (the contract's
    idempotency; the v5 server's race breaks it).
    """

    outcomes: frozenset[tuple[int, int]]
    same_token: bool
    why: str = ""

    def describe(self) -> str:
        pairs = " or ".join(f"{a}+{b}" for a, b in sorted(self.outcomes))
        return f"{pairs}{', same token' if self.same_token else ''}: {self.why}"


# --- step 1 and steps 4..7 -------------------------------------------------------------


@lru_cache(maxsize=8192)
def _refusal(device_id: str, child_id: str, firmware_version: str | None) -> str | None:
    return claim_body_refusal(device_id, child_id, firmware_version)


def body_refusal(dev: DeviceFacts) -> str | None:
    """Why the server's validation refuses this device's claim body (422), or None."""
    return _refusal(dev.device_id, dev.child_id, getattr(dev, "firmware_version", None))


def check_category(dev: DeviceFacts) -> str:
    """Which named check a device's first send belongs to."""
    if body_refusal(dev) is not None:
        return "validation"
    if not dev.provisioned:
        return "auto_register"
    if dev.signing == "normalized":
        return "hmac_normalization"
    if not _ids_normalised(dev):
        return "case_insensitive_id"
    return "first_claim"


def device_status(
    profile: ServerProfile, dev: DeviceFacts, hmac: HmacKind = "good"
) -> tuple[int, str]:
    """Steps 4-7 for a valid send that passed step 3: the status and why."""
    flags, build = profile.flags, profile.build
    d = normalize_id(dev.device_id)
    if dev.provisioned and not (build.lookup_active_only and not dev.active):
        stored, active = dev.oob, dev.active
    elif profile.auto_registers(d):
        if dev.provisioned:  # v5-head: the lookup skipped the disabled row, the insert hits it
            return 500, f"{build.name}: disabled prefixed device, the create finds its row"
        stored, active = profile.registered_secret(d), True
    elif dev.provisioned:
        return 404, f"{build.name}: the lookup skips disabled devices"
    elif flags.enable_auto_register or build.auto_register_always:
        return 404, "unknown device without an auto-register prefix"
    else:
        return 404, "unknown device, auto-registration off"
    if not active:
        return 403, "device disabled"
    if hmac != "good":
        return 401, "corrupted HMAC"
    if profile.secret_for(stored) != dev.oob:
        if build.static_secret is not None:
            return 401, f"{build.name} checks every device against one static secret"
        return 401, "auto-registered with a secret derived from the lower-case ID"
    if not _signed_ids_match(flags.normalize_ids_in_hmac, dev):
        side = "normalised" if flags.normalize_ids_in_hmac else "as received"
        return 401, f"server HMACs IDs {side}, firmware signs them {dev.signing}"
    if dev.child_state != "active":
        if profile.child_fallback:  # its lookup skips inactive children too
            return 200, f"{build.name} outside production: child {dev.child_state}, made-up profile"
        return 404, f"child {dev.child_state}"
    return 200, "claim accepted"


def _creates(profile: ServerProfile, dev: DeviceFacts) -> bool:
    """Does this device's first valid claim insert a row (where a concurrent insert loses)?"""
    return (
        profile.build.insert_conflict_500
        and not dev.provisioned
        and profile.auto_registers(normalize_id(dev.device_id))
    )


def _signed_ids_match(server_normalizes: bool, dev: DeviceFacts) -> bool:
    """Do the server and firmware HMAC the same ID bytes? Equal keys then give equal HMACs."""
    return server_normalizes == (dev.signing == "normalized") or _ids_normalised(dev)


def _ids_normalised(dev: DeviceFacts) -> bool:
    """Both IDs already as the server keys them (``strip().lower()``)."""
    return dev.device_id == normalize_id(dev.device_id) and dev.child_id == normalize_id(
        dev.child_id
    )


_REDIS_WHY = {
    "down-since-start": "Redis down since start: no client, 503",
    "down-later": "Redis down after the first claim: 503 whatever the flags",
}


# --- step 3 and the whole send --------------------------------------------------------


def expect_send(
    profile: ServerProfile,
    dev: DeviceFacts,
    hmac: HmacKind = "good",
    history: Sequence[Sent] = (),
) -> Expectation:
    """The acceptable answer to one send, after ``history`` with the same nonce (sequential)."""
    refused = body_refusal(dev)
    if refused is not None:
        return Expectation(frozenset({INVALID_BODY}), why=f"validation: {refused}")
    redis = profile.redis_answer()
    if redis == "503":
        return Expectation(frozenset({503}), why=_REDIS_WHY[profile.redis])
    status, why = device_status(profile, dev, hmac)
    if redis == "unprotected":
        return Expectation(frozenset({status}), why=f"{why} (Redis down: no replay protection)")
    history = [h for h in history if h.status != 503]  # a 503 recorded nothing we can know
    if not history:
        return Expectation(frozenset({status}), why=why)
    if profile.flags.enable_idempotency:
        if any(h.hmac == hmac and h.status == 200 for h in history):
            return Expectation(frozenset({200}), replay=True, why="idempotent retry")
        if history[0].hmac != hmac:
            burnt = " (burnt by the failed first send)" if history[0].status != 200 else ""
            return Expectation(frozenset({409}), why=f"nonce recorded with another HMAC{burnt}")
        return Expectation(frozenset({status}), why=f"{why} (same HMAC, nothing cached)")
    return Expectation(frozenset({409}), why="nonce reused, idempotency off")


def expect_concurrent(
    profile: ServerProfile, dev: DeviceFacts, registered: bool = False
) -> PairExpectation:
    """Two byte-identical sends with a fresh nonce, in flight together.

    ``registered``: an unknown device was already created by an earlier claim
    (on v5-head a losing concurrent insert is a 500, so it matters).
    """
    if body_refusal(dev) is not None:
        return PairExpectation(frozenset({(422, 422)}), False, "both refused by validation")
    redis = profile.redis_answer()
    if redis == "503":
        return PairExpectation(frozenset({(503, 503)}), False, _REDIS_WHY[profile.redis])
    status, why = device_status(profile, dev, "good")
    both = {(status, status)}
    if not registered and _creates(profile, dev):
        both.add((min(status, 500), max(status, 500)))
        why += f"; {profile.name}: the losing concurrent insert may be a 500"
    if redis == "unprotected":
        return PairExpectation(frozenset(both), False, f"Redis down, unprotected ({why})")
    if profile.flags.enable_idempotency:
        return PairExpectation(
            frozenset(both),
            status == 200,
            f"idempotency on: both get the first answer ({why})",
        )
    low, high = sorted((status, 409))
    return PairExpectation(
        frozenset({(low, high)}), False, f"idempotency off: one {status} ({why}), the other 409"
    )


# --- judging what came back -------------------------------------------------------------


def judge_send(
    exp: Expectation, status: int, headers: dict[str, str], body: bytes, first_body: bytes | None
) -> str | None:
    """None when the answer meets the expectation, else what was wrong (no secrets)."""
    if status not in exp.statuses:
        return f"status {status}"
    if status == 200:
        flagged = headers.get(IDEMPOTENT_HEADER, "").lower() == "true"
        if exp.replay:
            if not flagged:
                return "200 without X-Idempotent-Request: true"
            if first_body is not None and not _same_json(body, first_body):
                if _token(body) != _token(first_body):
                    return "200 with a different token than the first answer"
                return "200 with a different body than the first answer"
        elif flagged:
            return "X-Idempotent-Request: true on a first answer"
    return None


def judge_pair(
    exp: PairExpectation, statuses: tuple[int, int], bodies: tuple[bytes, bytes]
) -> str | None:
    """None when two concurrent answers meet the expectation, else what was wrong."""
    key = (min(statuses), max(statuses))
    if key not in exp.outcomes:
        return f"statuses {statuses[0]}+{statuses[1]}"
    if exp.same_token and statuses == (200, 200):
        a, b = _token(bodies[0]), _token(bodies[1])
        if a is None or a != b:
            return "two 200s with different tokens (steps 3 and 8 not atomic)"
    return None


def _same_json(a: bytes, b: bytes) -> bool:
    """The same body: byte for byte, or the same JSON document re-serialised."""
    if a == b:
        return True
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return False


def _token(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    token = data.get("access_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None
