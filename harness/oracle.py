"""The oracle: what a server configured as declared must answer, claim by claim.

A pure function of (server profile, device facts, the send, that nonce's
history) -> ``Expectation``, plus ``judge_*`` functions that compare an
expectation with what came back. No I/O, no clocks: ``compat`` uses the same
functions to predict a configuration it did not run, and the table tests run
without a network.

The contract (CONTRACT.md section 2), step by step, as encoded here:

1. validation -> 422 (the fleet only sends valid bodies; IDs are validated on
   the stripped value, so surrounding spaces pass);
2. ``d, c = strip().lower()`` of both IDs;
3. replay / idempotency keyed on ``(d, c, nonce)``, recorded *before* the HMAC
   check, so a bad HMAC burns the nonce:
   idempotency on: a cached 200 for the same HMAC -> that body again with
   ``X-Idempotent-Request: true``; the nonce recorded with another HMAC -> 409;
   recorded with the same HMAC but nothing cached (the first failed, or is
   still in flight: the v5 race) -> carry on. Idempotency off: any reuse -> 409;
4. device lookup by ``d``; missing: auto-register only ``teddy-esp32-``/``esp32-``
   prefixes when enabled, with the secret derived from the lower-case ``d``
   (or the profile's static secret), else 404; disabled -> 403;
5. HMAC over the IDs as received, or over ``d``/``c`` with NORMALIZE_IDS_IN_HMAC -> 401;
6. child lookup by ``c`` -> 404 when unknown or inactive;
7. -> 200 with tokens.

Nonce-store outages are modelled by ``ServerProfile.nonce_store_down``: the
flags then decide between 503 (fail closed) and carrying on unprotected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

from harness.flags import Flags
from harness.protocol import AUTO_REGISTER_PREFIXES, derive_oob_v5, normalize_id

HmacKind = Literal["good", "bad", "other"]
IDEMPOTENT_HEADER = "x-idempotent-request"
CORRELATION_HEADER = "x-correlation-id"


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What the server under test is declared to be: flags plus build/deployment facts."""

    flags: Flags = field(default_factory=Flags)
    # The fix for the v5 race (steps 3 and 8 atomic). Informative: the contract's
    # expectation (same token for concurrent identical sends) does not change.
    atomic_idempotency: bool = False
    # None: auto-registered devices get derive_oob_v5(lower-case d); else this secret.
    auto_register_secret: bytes | None = None
    # The nonce store (Redis) is known to be down for this run.
    nonce_store_down: bool = False


class DeviceFacts(Protocol):
    """What the oracle needs to know about a device (``VirtualDevice`` has all of it)."""

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


# --- steps 4..7: what a send that got past the replay step meets -------------------


@lru_cache(maxsize=4096)
def _auto_secret(d: str) -> bytes:
    return bytes.fromhex(derive_oob_v5(d))


def check_category(dev: DeviceFacts) -> str:
    """Which named check a device's first send belongs to."""
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
    """Steps 4-7 for a send that passed step 3: the status and why."""
    flags = profile.flags
    d = normalize_id(dev.device_id)
    if dev.provisioned:
        secret, active = dev.oob, dev.active
    elif flags.enable_auto_register and d.startswith(AUTO_REGISTER_PREFIXES):
        secret = profile.auto_register_secret or _auto_secret(d)
        active = True
    elif flags.enable_auto_register:
        return 404, "unknown device without an auto-register prefix"
    else:
        return 404, "unknown device, auto-registration off"
    if not active:
        return 403, "device disabled"
    if hmac != "good":
        return 401, "corrupted HMAC"
    if secret != dev.oob:
        return 401, "auto-registered with a secret derived from the lower-case ID"
    if not _signed_ids_match(flags.normalize_ids_in_hmac, dev):
        side = "normalised" if flags.normalize_ids_in_hmac else "as received"
        return 401, f"server HMACs IDs {side}, firmware signs them {dev.signing}"
    if dev.child_state != "active":
        return 404, f"child {dev.child_state}"
    return 200, "claim accepted"


def _signed_ids_match(server_normalizes: bool, dev: DeviceFacts) -> bool:
    """Do the server and firmware HMAC the same ID bytes? Equal keys then give equal HMACs."""
    return server_normalizes == (dev.signing == "normalized") or _ids_normalised(dev)


def _ids_normalised(dev: DeviceFacts) -> bool:
    """Both IDs already as the server keys them (``strip().lower()``)."""
    return dev.device_id == normalize_id(dev.device_id) and dev.child_id == normalize_id(
        dev.child_id
    )


def fails_closed(flags: Flags) -> bool:
    """With the nonce store down: 503 (True) or carry on without replay protection (False)."""
    if flags.enable_idempotency:
        return not flags.disable_idempotency_on_redis_failure
    return not flags.fail_open_on_redis_error


# --- step 3 and the whole send --------------------------------------------------------


def expect_send(
    profile: ServerProfile,
    dev: DeviceFacts,
    hmac: HmacKind = "good",
    history: Sequence[Sent] = (),
) -> Expectation:
    """The acceptable answer to one send, after ``history`` with the same nonce (sequential)."""
    status, why = device_status(profile, dev, hmac)
    flags = profile.flags
    if profile.nonce_store_down:
        if fails_closed(flags):
            return Expectation(frozenset({503}), why="nonce store down, server fails closed")
        return Expectation(frozenset({status}), why=f"{why} (store down, no replay protection)")
    if not history:
        return Expectation(frozenset({status}), why=why)
    if flags.enable_idempotency:
        if any(h.hmac == hmac and h.status == 200 for h in history):
            return Expectation(frozenset({200}), replay=True, why="idempotent retry")
        if history[0].hmac != hmac:
            burnt = " (burnt by the failed first send)" if history[0].status != 200 else ""
            return Expectation(frozenset({409}), why=f"nonce recorded with another HMAC{burnt}")
        return Expectation(frozenset({status}), why=f"{why} (same HMAC, nothing cached)")
    return Expectation(frozenset({409}), why="nonce reused, idempotency off")


def expect_concurrent(profile: ServerProfile, dev: DeviceFacts) -> PairExpectation:
    """Two byte-identical sends with a fresh nonce, in flight together."""
    status, why = device_status(profile, dev, "good")
    if profile.nonce_store_down:
        code = 503 if fails_closed(profile.flags) else status
        return PairExpectation(frozenset({(code, code)}), False, "nonce store down")
    if profile.flags.enable_idempotency:
        return PairExpectation(
            frozenset({(status, status)}),
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
