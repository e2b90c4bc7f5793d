"""Which flags does a claim server really run? Five or six claims tell.

A team about to soak staging wants to confirm the configuration first: the
soak's oracle judges every answer against the *declared* flags, so a wrong
declaration turns into a wall of false violations. The probe decides three
flags from the server's answers alone:

* ``NORMALIZE_IDS_IN_HMAC``: the same provisioned device, an ID with
  upper-case letters, signed once over the IDs as sent (legacy) and once over
  ``strip().lower()`` (normalised), fresh nonces: exactly one gets 200, the
  other 401.
* ``ENABLE_IDEMPOTENCY``: the first claim's identical body sent again: 200 with
  the same body and ``X-Idempotent-Request: true`` (on) or 409 (off). Works
  even when the first answer was a 401 or 404 (the nonce is recorded first: on
  lets the same HMAC carry on to the same answer, off says 409).
* ``ENABLE_AUTO_REGISTER``: an unknown ``esp32-<random hex>`` device with the v5
  secret derived from its lower-case ID: 200 (on) or 404 (off). A 401 means on,
  with a server that gives auto-registered devices another secret.

The two Redis-failure flags only show when the nonce store fails, so they are
reported as not probed. The probe needs one provisioned device (ID, OOB secret)
and an active child; against the embedded server it seeds its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.masking import mask_id, scrub
from harness.protocol import (
    derive_oob_v5,
    mac_to_device_id,
    new_nonce,
    normalize_id,
    sign_claim,
    user_agent,
    validate_child_id,
    validate_device_id,
)
from harness.protocol.claim import CLAIM_PATH, ClaimRequest
from harness.protocol.signing import SigningMode

Verdict = Literal["on", "off", "undecided", "not probed"]
PROBE_FIRMWARE = "harness-probe"
MAX_RATE_LIMIT_WAITS = 3
MAX_RETRY_AFTER_S = 5.0
PROBED_FLAGS: tuple[str, ...] = (
    "ENABLE_IDEMPOTENCY",
    "ENABLE_AUTO_REGISTER",
    "NORMALIZE_IDS_IN_HMAC",
)
NOT_PROBED = {
    "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE": "only observable while the nonce store is down",
    "FAIL_OPEN_ON_REDIS_ERROR": "only observable while the nonce store is down",
}


@dataclass(frozen=True, slots=True)
class ProbeDevice:
    """A device the target has provisioned (any ID case) with the OOB secret it stores."""

    device_id: str
    oob: bytes
    child_id: str

    def __post_init__(self) -> None:
        validate_device_id(self.device_id, "--device-id")
        validate_child_id(self.child_id, "--child-id")
        if len(self.oob) != 32:
            raise HarnessInputError("--oob", f"must be 32 bytes (64 hex), got {len(self.oob)}")

    def __repr__(self) -> str:  # never the secret
        return f"ProbeDevice({mask_id(self.device_id)}, child {mask_id(self.child_id)})"


@dataclass(frozen=True, slots=True)
class FlagVerdict:
    flag: str
    verdict: Verdict
    evidence: str

    def to_dict(self) -> dict[str, str]:
        return {"flag": self.flag, "verdict": self.verdict, "evidence": scrub(self.evidence)}


@dataclass(frozen=True, slots=True)
class ProbeClaim:
    """One claim the probe sent and what came back (masked, for the report)."""

    step: str
    status: int | str
    idempotent_header: bool = False
    correlation_id: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status,
            "x_idempotent_request": self.idempotent_header,
            "x_correlation_id": self.correlation_id,
            "detail": scrub(self.detail),
        }


@dataclass(slots=True)
class ProbeResult:
    target: str
    verdicts: list[FlagVerdict]
    claims: list[ProbeClaim] = field(default_factory=list)

    @property
    def decided(self) -> bool:
        """Every probed flag got an on/off verdict."""
        return all(v.verdict in ("on", "off") for v in self.verdicts if v.verdict != "not probed")

    def verdict(self, flag: str) -> Verdict:
        for v in self.verdicts:
            if v.flag == flag:
                return v.verdict
        raise KeyError(flag)

    def flag_overrides(self) -> list[str]:
        """The decided flags as ``--flag NAME=true|false`` values for ``harness soak``."""
        return [
            f"{v.flag}={'true' if v.verdict == 'on' else 'false'}"
            for v in self.verdicts
            if v.verdict in ("on", "off")
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "decided": self.decided,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "soak_flags": self.flag_overrides(),
            "claims": [c.to_dict() for c in self.claims],
        }

    def table(self) -> str:
        """The console table: flag, verdict, evidence."""
        rows = [("flag", "verdict", "evidence")] + [
            (v.flag, v.verdict, scrub(v.evidence)) for v in self.verdicts
        ]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 8}")
        return "\n".join(lines)


class _Prober:
    """Sends the probe's claims over one fresh-connection transport."""

    def __init__(self, transport: Any, claim_path: str) -> None:
        self.transport = transport
        self.path = claim_path
        self.headers: Sequence[tuple[str, str]] = (("User-Agent", user_agent(PROBE_FIRMWARE)),)
        self.claims: list[ProbeClaim] = []

    async def send(self, step: str, body: bytes) -> tuple[int | str, dict[str, str], bytes]:
        """POST a claim, waiting out a 429's Retry-After (same body) a few times."""
        from harness.transport import TransportConnectionError, TransportTimeout

        for _ in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                resp = await self.transport.post(self.path, body, self.headers)
            except TransportTimeout:
                self.claims.append(ProbeClaim(step, "timeout"))
                return "timeout", {}, b""
            except TransportConnectionError as exc:
                self.claims.append(ProbeClaim(step, "connection_error", detail=str(exc)))
                return "connection_error", {}, b""
            if resp.status != 429:
                break
            await asyncio.sleep(_retry_after(resp.headers.get("retry-after")))
        self.claims.append(
            ProbeClaim(
                step,
                resp.status,
                resp.headers.get("x-idempotent-request", "").lower() == "true",
                "x-correlation-id" in resp.headers,
                _detail(resp.body),
            )
        )
        return resp.status, resp.headers, resp.body


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return 1.0


def _detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return data["detail"][:120]
    return ""


def _body(device_id: str, child_id: str, oob: bytes, mode: SigningMode, nonce: str) -> bytes:
    hmac_hex = sign_claim(device_id, child_id, nonce, oob, mode)
    return ClaimRequest(device_id, child_id, nonce, hmac_hex, PROBE_FIRMWARE).to_json()


def _case_sensitive_ids(device: ProbeDevice) -> tuple[str, str] | None:
    """IDs to send whose raw and normalised forms differ, so the two signatures differ.

    The server looks devices up case-insensitively, so an upper-case variant of
    a lower-case provisioned ID is still the same device.
    """
    d, c = device.device_id, device.child_id
    if d != normalize_id(d) or c != normalize_id(c):
        return d, c
    if d.upper() != d:
        return d.upper(), c
    if c.upper() != c:
        return d, c.upper()
    return None


async def probe_flags(
    transport: Any, device: ProbeDevice, claim_path: str = CLAIM_PATH
) -> tuple[list[FlagVerdict], list[ProbeClaim]]:
    """Run the probe's claims over ``transport``; returns the verdicts and the claims sent."""
    p = _Prober(transport, claim_path)
    shown = mask_id(device.device_id)
    verdicts: list[FlagVerdict] = []

    # 1. NORMALIZE_IDS_IN_HMAC: one device, both signatures, fresh nonces.
    ids = _case_sensitive_ids(device)
    mode_ok: SigningMode | None = None
    first_body: bytes
    first_status: int | str
    first_resp: bytes
    if ids is None:
        verdicts.append(
            FlagVerdict(
                "NORMALIZE_IDS_IN_HMAC",
                "undecided",
                f"device {shown} and its child have no letter to change case: both signatures "
                "are the same",
            )
        )
        d, c = device.device_id, device.child_id
        first_body = _body(d, c, device.oob, "legacy", new_nonce())
        first_status, _, first_resp = await p.send("claim", first_body)
        if first_status == 200:
            mode_ok = "legacy"
    else:
        d, c = ids
        legacy_body = _body(d, c, device.oob, "legacy", new_nonce())
        s_legacy, _, r_legacy = await p.send("legacy-signed", legacy_body)
        norm_body = _body(d, c, device.oob, "normalized", new_nonce())
        s_norm, _, r_norm = await p.send("normalized-signed", norm_body)
        evidence = f"device {mask_id(d)}: legacy signature -> {s_legacy}, normalised -> {s_norm}"
        if (s_legacy, s_norm) == (200, 401):
            verdicts.append(FlagVerdict("NORMALIZE_IDS_IN_HMAC", "off", evidence))
            mode_ok = "legacy"
        elif (s_legacy, s_norm) == (401, 200):
            verdicts.append(FlagVerdict("NORMALIZE_IDS_IN_HMAC", "on", evidence))
            mode_ok = "normalized"
        else:
            hint = _hint(s_legacy, s_norm, r_legacy or r_norm)
            verdicts.append(FlagVerdict("NORMALIZE_IDS_IN_HMAC", "undecided", evidence + hint))
        if mode_ok == "normalized":
            first_body, first_status, first_resp = norm_body, s_norm, r_norm
        else:
            first_body, first_status, first_resp = legacy_body, s_legacy, r_legacy

    # 2. ENABLE_IDEMPOTENCY: the identical body again.
    s_again, h_again, r_again = await p.send("identical-resend", first_body)
    header = h_again.get("x-idempotent-request", "").lower() == "true"
    evidence = f"claim -> {first_status}; identical resend -> {s_again}"
    if s_again == 409:
        verdicts.append(
            FlagVerdict("ENABLE_IDEMPOTENCY", "off", evidence + " (nonce already used)")
        )
    elif s_again == 200 and first_status == 200:
        if header and r_again == first_resp:
            verdicts.append(
                FlagVerdict(
                    "ENABLE_IDEMPOTENCY",
                    "on",
                    evidence + " with the same body and X-Idempotent-Request: true",
                )
            )
        else:
            why = "a new body" if r_again != first_resp else "no X-Idempotent-Request header"
            verdicts.append(
                FlagVerdict(
                    "ENABLE_IDEMPOTENCY",
                    "undecided",
                    f"{evidence} with {why}: the retry was served as a new claim "
                    "(no replay protection: nonce store down with a fail-open flag?)",
                )
            )
    elif isinstance(s_again, int) and s_again == first_status and s_again in (401, 403, 404):
        verdicts.append(
            FlagVerdict(
                "ENABLE_IDEMPOTENCY",
                "on",
                evidence + " again (same HMAC carries on past the nonce check; off would be 409)",
            )
        )
    else:
        if s_again == 503:
            evidence += " (the server's nonce store is down: replay behaviour not visible)"
        verdicts.append(FlagVerdict("ENABLE_IDEMPOTENCY", "undecided", evidence))

    # 3. ENABLE_AUTO_REGISTER: an unknown prefixed device, v5 secret from its lower-case ID.
    unknown = "esp32-" + os.urandom(6).hex()
    child = normalize_id(device.child_id)  # lower-case: both signing modes agree
    auto_body = _body(unknown, child, bytes.fromhex(derive_oob_v5(unknown)), "legacy", new_nonce())
    s_auto, _, r_auto = await p.send("unknown-esp32-device", auto_body)
    detail = _detail(r_auto)
    evidence = f"unknown device esp32-*** -> {s_auto}" + (f" ({detail})" if detail else "")
    child_known = any(cl.status == 200 for cl in p.claims[:-1])
    if s_auto == 200:
        verdicts.append(FlagVerdict("ENABLE_AUTO_REGISTER", "on", evidence))
    elif s_auto == 401:
        verdicts.append(
            FlagVerdict(
                "ENABLE_AUTO_REGISTER",
                "on",
                evidence + ": registered, but with a secret other than the v5 derivation "
                "(static-secret build?)",
            )
        )
    elif s_auto == 404 and (child_known or "device" in detail.lower()):
        why = "the child is known (an earlier claim got 200)" if child_known else "says device"
        verdicts.append(FlagVerdict("ENABLE_AUTO_REGISTER", "off", f"{evidence}; {why}"))
    else:
        extra = "; 404 could be the child as well" if s_auto == 404 else ""
        verdicts.append(FlagVerdict("ENABLE_AUTO_REGISTER", "undecided", evidence + extra))

    for flag, why in NOT_PROBED.items():
        verdicts.append(FlagVerdict(flag, "not probed", why))
    order = list(Flags.ENV_NAMES)  # probed flags first, each group in the checklist's order
    verdicts.sort(key=lambda v: (v.verdict == "not probed", order.index(v.flag)))
    return verdicts, p.claims


def _hint(a: int | str, b: int | str, body: bytes) -> str:
    statuses = {a, b}
    detail = _detail(body)
    tail = f" ({detail})" if detail else ""
    if 503 in statuses:
        return f": the server answers 503 (nonce store or registry down?){tail}"
    if statuses == {401}:
        return f": neither signature accepted: wrong OOB secret?{tail}"
    if 404 in statuses:
        return f": device or child not provisioned on the target?{tail}"
    if 403 in statuses:
        return f": device disabled on the target{tail}"
    if statuses == {200}:
        return ": both accepted: the server does not check the HMAC as the contract says"
    return tail


async def ensure_reachable(base_url: str, timeout: float = 10.0) -> None:
    """Any HTTP answer to ``GET /health`` will do; no answer at all is a bad ``--target``."""
    from harness.transport import TransportError, make_transport

    transport = make_transport(base_url, mode="fresh", timeout=timeout, max_connections=1)
    try:
        await transport.get("/health")
    except TransportError as exc:
        raise HarnessInputError("--target", f"cannot reach {base_url}: {exc}") from None
    finally:
        await transport.aclose()


async def probe_target(
    base_url: str, device: ProbeDevice, claim_path: str = CLAIM_PATH, timeout: float = 10.0
) -> ProbeResult:
    """Probe a running server at ``base_url`` with one provisioned device."""
    from harness.transport import make_transport

    await ensure_reachable(base_url, timeout)
    transport = make_transport(base_url, mode="fresh", timeout=timeout, max_connections=4)
    try:
        verdicts, claims = await probe_flags(transport, device, claim_path)
    finally:
        await transport.aclose()
    return ProbeResult(base_url, verdicts, claims)


def probe_seed_device(rng: random.Random | None = None) -> ProbeDevice:
    """A v5-style device for the embedded server: upper-case MAC ID, secret derived as held."""
    r = rng or random.Random()
    mac = bytes([0xCC, 0xDB, 0xA7]) + r.randbytes(3)
    device_id = mac_to_device_id(mac)
    return ProbeDevice(device_id, bytes.fromhex(derive_oob_v5(device_id)), "probe-child-0001")


def probe_embedded(flags: Flags, atomic_idempotency: bool = False) -> ProbeResult:
    """Start the reference server with ``flags``, seed a device and a child, and probe it."""
    from harness.server.config import ServerConfig
    from harness.server.embedded import EmbeddedServer
    from harness.server.seed import Seed, SeedChild, SeedDevice

    device = probe_seed_device()
    seed = Seed(
        (SeedDevice(normalize_id(device.device_id), device.oob.hex().upper()),),
        (SeedChild(device.child_id),),
    )
    config = ServerConfig(flags=flags, seed=seed, atomic_idempotency=atomic_idempotency)
    with EmbeddedServer(config) as server:
        result = asyncio.run(probe_target(server.url, device))
    result.target = f"embedded ({flags.describe()})"
    return result


def device_from_fleet(path: str) -> ProbeDevice:
    """The first provisioned, active device with an upper-case letter and an active child."""
    from harness.fleet import load_fleet

    fleet = load_fleet(path)
    fallback: ProbeDevice | None = None
    for dev in fleet.devices():
        if not (dev.provisioned and dev.active and dev.child_state == "active"):
            continue
        candidate = ProbeDevice(dev.device_id.strip(), dev.oob, dev.child_id.strip())
        if any(ch.isupper() for ch in candidate.device_id):
            return candidate
        if fallback is None:
            fallback = candidate
    if fallback is None:
        raise HarnessInputError(
            "--fleet", "no provisioned, active device with an active child to probe with", path
        )
    return fallback
