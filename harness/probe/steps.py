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

It also names the build (``harness.profiles``): a device whose own secret is
refused but v5-head's public static secret accepted is v5-head; with
idempotency on, bursts of identical claims answered with one token or several
tell the atomic build from v5.0's race; error bodies and correlation IDs tell
the deployed app from the bare router; on v5-head, an unknown child's answer
tells ENVIRONMENT. The two Redis-failure flags only show when the nonce store
fails, so they are reported as not probed. The probe needs one provisioned device (ID, OOB secret)
and an active child; against the embedded server it seeds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.fleet.loader import load_fleet
from harness.judge import retry_after
from harness.masking import mask_id
from harness.oracle import CORRELATION_HEADER, IDEMPOTENT_HEADER
from harness.preflight import ensure_reachable, error_message
from harness.probe.result import (
    BURST,
    BURSTS,
    MAX_RATE_LIMIT_WAITS,
    MAX_RETRY_AFTER_S,
    NOT_PROBED,
    PROBE_FIRMWARE,
    FlagVerdict,
    ProbeClaim,
    ProbeDevice,
    ProbeResult,
    ProfileVerdict,
)
from harness.profiles import HEAD_STATIC_SECRET, make_profile
from harness.protocol import (
    derive_oob_v5,
    mac_to_device_id,
    new_nonce,
    normalize_id,
    sign_claim,
    user_agent,
)
from harness.protocol.claim import CLAIM_PATH, ClaimRequest
from harness.protocol.signing import SigningMode
from harness.server.embedded import embedded_server
from harness.server.seed import Seed, SeedChild, SeedDevice
from harness.transport import (
    TransportConnectionError,
    TransportError,
    TransportTimeout,
    make_transport,
)


class _Prober:
    """Sends the probe's claims over one fresh-connection transport."""

    def __init__(self, transport: Any, claim_path: str, burst_transport: Any = None) -> None:
        self.transport = transport
        self.burst_transport = burst_transport
        self.path = claim_path
        self.headers: Sequence[tuple[str, str]] = (("User-Agent", user_agent(PROBE_FIRMWARE)),)
        self.claims: list[ProbeClaim] = []
        # Error answers seen: (status, body, carried X-Correlation-Id), for the deployment.
        self.errors: list[tuple[int, bytes, bool]] = []

    async def send(
        self, step: str, body: bytes, transport: Any = None
    ) -> tuple[int | str, dict[str, str], bytes]:
        """POST a claim, waiting out a 429's Retry-After (same body) a few times."""
        for _ in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                resp = await (transport or self.transport).post(self.path, body, self.headers)
            except TransportTimeout:
                self.claims.append(ProbeClaim(step, "timeout"))
                return "timeout", {}, b""
            except TransportConnectionError as exc:
                self.claims.append(ProbeClaim(step, "connection_error", detail=str(exc)))
                return "connection_error", {}, b""
            if resp.status != 429:
                break
            wait = retry_after(resp.headers.get("retry-after"))
            await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))
        self.claims.append(
            ProbeClaim(
                step,
                resp.status,
                resp.headers.get(IDEMPOTENT_HEADER, "").lower() == "true",
                CORRELATION_HEADER in resp.headers,
                _detail(resp.body),
            )
        )
        if resp.status != 200:
            self.errors.append((resp.status, resp.body, CORRELATION_HEADER in resp.headers))
        return resp.status, resp.headers, resp.body

    async def burst(self, step: str, body: bytes, n: int) -> list[tuple[int | str, bytes]]:
        """``n`` identical claims in flight together (the v5 race needs them so): over
        ``n`` connections opened first (a GET each), then written back to back."""
        transport = self.burst_transport or self.transport
        with contextlib.suppress(TransportError):  # best effort: the claims below count
            await asyncio.gather(*(transport.get("/health") for _ in range(n)))
        answers = await asyncio.gather(*(self.send(step, body, transport) for _ in range(n)))
        return [(status, answer) for status, _, answer in answers]


def _detail(body: bytes) -> str:
    """An error's reason, in the deployed app's shape or FastAPI's (harness.preflight)."""
    return (error_message(body) or "")[:120]


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
    transport: Any,
    device: ProbeDevice,
    claim_path: str = CLAIM_PATH,
    burst_transport: Any = None,
) -> tuple[list[FlagVerdict], list[ProbeClaim], ProfileVerdict]:
    """Run the probe's claims over ``transport`` (the bursts over ``burst_transport``, kept
    alive): the flag verdicts, the claims, the build."""
    p = _Prober(transport, claim_path, burst_transport)
    verdicts: list[FlagVerdict] = []
    build: list[str] = []  # evidence for the build

    # 1. The key and NORMALIZE_IDS_IN_HMAC: one device, both signatures, fresh nonces; if
    #    its own secret is refused both ways, v5-head's public static secret.
    key, norm, first = await _signatures(p, device, device.oob, "")
    head = False
    if first.status == 401 and norm.verdict == "undecided" and device.oob != HEAD_STATIC_SECRET:
        s_key, s_norm, s_first = await _signatures(p, device, HEAD_STATIC_SECRET, "static-")
        if s_key is not None:
            head, key, norm, first = True, s_key, s_norm, s_first
            build.append(
                "the device's own secret refused, v5-head's public static secret accepted "
                f"({s_first.step} -> 200)"
            )
    if key is not None and not head:
        build.append(f"the device's own secret accepted ({first.step} -> 200): per-device secrets")
    verdicts.append(norm)

    # 2. ENABLE_IDEMPOTENCY: the identical body again.
    idem = await _idempotency(p, first)
    verdicts.append(idem)

    # 3. ENABLE_AUTO_REGISTER: an unknown prefixed device.
    verdicts.append(await _auto_register(p, device, head))

    # 4. The v5 race: with idempotency on, bursts of identical claims.
    name = "unknown"
    if key is not None:
        name = "v5-head" if head else "v5.0"
        if idem.verdict == "on" and first.status == 200:
            race = await _race(p, device, key, first.mode)
            build.append(race)
            if not head and race.startswith("no race"):
                name = "atomic"
        elif not head:
            build.append("idempotency off: v5.0 and atomic answer alike (declare either)")
    else:
        build.append("neither the device's own secret nor v5-head's static one was accepted")

    # 5. ENVIRONMENT (v5-head only): its fallback makes up unknown children off production.
    environment = await _environment(p, device, key, first.mode) if head and key else None

    for flag, why in NOT_PROBED.items():
        verdicts.append(FlagVerdict(flag, "not probed", why))
    order = list(Flags.ENV_NAMES)  # probed flags first, each group in the checklist's order
    verdicts.sort(key=lambda v: (v.verdict in ("not probed", "no effect"), order.index(v.flag)))
    bare = _deployment(p, build)
    return verdicts, p.claims, ProfileVerdict(name, build, bare, environment)


@dataclass(frozen=True, slots=True)
class _First:
    """The claim the idempotency step resends: its step name, body, answer and signing."""

    step: str
    body: bytes
    status: int | str
    answer: bytes
    mode: SigningMode = "legacy"


async def _signatures(
    p: _Prober, device: ProbeDevice, key: bytes, prefix: str
) -> tuple[bytes | None, FlagVerdict, _First]:
    """Legacy and normalised signatures with ``key``: (the key if one was accepted, the
    NORMALIZE verdict, the claim to resend)."""
    ids = _case_sensitive_ids(device)
    if ids is None:
        d, c = device.device_id, device.child_id
        body = _body(d, c, key, "legacy", new_nonce())
        status, _, answer = await p.send(prefix + "claim", body)
        first = _First(prefix + "claim", body, status, answer)
        verdict = FlagVerdict(
            "NORMALIZE_IDS_IN_HMAC",
            "undecided",
            f"device {mask_id(device.device_id)} and its child have no letter to change case: "
            "both signatures are the same",
        )
        return (key if status == 200 else None), verdict, first
    d, c = ids
    legacy_body = _body(d, c, key, "legacy", new_nonce())
    s_legacy, _, r_legacy = await p.send(prefix + "legacy-signed", legacy_body)
    norm_body = _body(d, c, key, "normalized", new_nonce())
    s_norm, _, r_norm = await p.send(prefix + "normalized-signed", norm_body)
    evidence = f"device {mask_id(d)}: legacy signature -> {s_legacy}, normalised -> {s_norm}"
    legacy = _First(prefix + "legacy-signed", legacy_body, s_legacy, r_legacy)
    if (s_legacy, s_norm) == (200, 401):
        return key, FlagVerdict("NORMALIZE_IDS_IN_HMAC", "off", evidence), legacy
    if (s_legacy, s_norm) == (401, 200):
        first = _First(prefix + "normalized-signed", norm_body, s_norm, r_norm, "normalized")
        return key, FlagVerdict("NORMALIZE_IDS_IN_HMAC", "on", evidence), first
    hint = _hint(s_legacy, s_norm, r_legacy or r_norm)
    return None, FlagVerdict("NORMALIZE_IDS_IN_HMAC", "undecided", evidence + hint), legacy


async def _idempotency(p: _Prober, first: _First) -> FlagVerdict:
    s_again, h_again, r_again = await p.send("identical-resend", first.body)
    header = h_again.get(IDEMPOTENT_HEADER, "").lower() == "true"
    evidence = f"claim -> {first.status}; identical resend -> {s_again}"
    if s_again == 409:
        return FlagVerdict("ENABLE_IDEMPOTENCY", "off", evidence + " (nonce already used)")
    if s_again == 200 and first.status == 200:
        if header and r_again == first.answer:
            return FlagVerdict(
                "ENABLE_IDEMPOTENCY",
                "on",
                evidence + " with the same body and X-Idempotent-Request: true",
            )
        why = "a new body" if r_again != first.answer else "no X-Idempotent-Request header"
        return FlagVerdict(
            "ENABLE_IDEMPOTENCY",
            "undecided",
            f"{evidence} with {why}: the retry was served as a new claim "
            "(no replay protection: Redis down since start?)",
        )
    if isinstance(s_again, int) and s_again == first.status and s_again in (401, 403, 404):
        return FlagVerdict(
            "ENABLE_IDEMPOTENCY",
            "on",
            evidence + " again (same HMAC carries on past the nonce check; off would be 409)",
        )
    if s_again == 503:
        evidence += " (the server's Redis is down: replay behaviour not visible)"
    return FlagVerdict("ENABLE_IDEMPOTENCY", "undecided", evidence)


async def _auto_register(p: _Prober, device: ProbeDevice, head: bool) -> FlagVerdict:
    unknown = "esp32-" + os.urandom(6).hex()
    child = normalize_id(device.child_id)  # lower-case: both signing modes agree
    key = HEAD_STATIC_SECRET if head else bytes.fromhex(derive_oob_v5(unknown))
    s_auto, _, r_auto = await p.send(
        "unknown-esp32-device", _body(unknown, child, key, "legacy", new_nonce())
    )
    detail = _detail(r_auto)
    evidence = f"unknown device esp32-*** -> {s_auto}" + (f" ({detail})" if detail else "")
    if head:
        if s_auto == 200:
            return FlagVerdict(
                "ENABLE_AUTO_REGISTER",
                "no effect",
                evidence + ": v5-head creates unknown prefixed devices whatever the flag",
            )
        return FlagVerdict("ENABLE_AUTO_REGISTER", "undecided", evidence)
    child_known = any(cl.status == 200 for cl in p.claims[:-1])
    if s_auto == 200:
        return FlagVerdict("ENABLE_AUTO_REGISTER", "on", evidence)
    if s_auto == 401:
        return FlagVerdict(
            "ENABLE_AUTO_REGISTER",
            "on",
            evidence + ": registered, but with a secret other than the v5 derivation "
            "(static-secret build?)",
        )
    if s_auto == 404 and (child_known or "device" in detail.lower()):
        why = "the child is known (an earlier claim got 200)" if child_known else "says device"
        return FlagVerdict("ENABLE_AUTO_REGISTER", "off", f"{evidence}; {why}")
    extra = "; 404 could be the child as well" if s_auto == 404 else ""
    return FlagVerdict("ENABLE_AUTO_REGISTER", "undecided", evidence + extra)


async def _race(p: _Prober, device: ProbeDevice, key: bytes, mode: SigningMode) -> str:
    """Bursts of ``BURST`` identical claims: several tokens is the v5 race, one is atomic."""
    d, c = _case_sensitive_ids(device) or (device.device_id, device.child_id)
    for n in range(1, BURSTS + 1):
        body = _body(d, c, key, mode, new_nonce())
        answers = await p.burst(f"burst-{n}", body, BURST)
        tokens = {_token(a) for s, a in answers if s == 200}
        if len(tokens) > 1:
            return f"burst {n} of {BURST} identical claims got {len(tokens)} tokens: the v5 race"
    return f"no race in {BURSTS} bursts of {BURST} identical claims (one token each): atomic"


async def _environment(
    p: _Prober, device: ProbeDevice, key: bytes, mode: SigningMode
) -> str | None:
    d = _case_sensitive_ids(device)
    device_id = d[0] if d else device.device_id
    nobody = "probe-nobody-" + os.urandom(4).hex()
    status, _, _ = await p.send("unknown-child", _body(device_id, nobody, key, mode, new_nonce()))
    if status == 200:
        return "not production"
    return "production" if status == 404 else None


def _deployment(p: _Prober, evidence: list[str]) -> bool | None:
    """Deployed app or bare router, from the error answers seen (None: none seen)."""
    shapes = []
    for status, body, cid in p.errors:
        if status == 422 or error_message(body) is None:
            continue
        wrapped = b'"error"' in body[:20]
        shapes.append((wrapped, cid))
    if not shapes:
        return None
    if all(wrapped and cid for wrapped, cid in shapes):
        evidence.append("error bodies {error: {code, message}} with X-Correlation-Id: deployed app")
        return False
    if all(not wrapped and not cid for wrapped, cid in shapes):
        evidence.append("error bodies {detail} without X-Correlation-Id: bare router")
        return True
    evidence.append("error bodies and correlation IDs mixed: neither deployment exactly")
    return None


def _token(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    token = data.get("access_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


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


async def probe_target(
    base_url: str,
    device: ProbeDevice,
    claim_path: str = CLAIM_PATH,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Probe a running server at ``base_url`` with one provisioned device; ``ssl_context``
    is an https:// target's (``harness.tls.client_context``; None: verified as usual)."""
    await ensure_reachable(base_url, timeout, ssl_context)
    transport = make_transport(
        base_url, mode="fresh", timeout=timeout, max_connections=4, ssl_context=ssl_context
    )
    bursts = make_transport(
        base_url, mode="keepalive", timeout=timeout, max_connections=BURST, ssl_context=ssl_context
    )
    try:
        verdicts, claims, profile = await probe_flags(transport, device, claim_path, bursts)
    finally:
        await transport.aclose()
        await bursts.aclose()
    return ProbeResult(base_url, verdicts, claims, profile)


def probe_seed_device(rng: random.Random | None = None) -> ProbeDevice:
    """A v5-style device for the embedded server: upper-case MAC ID, secret derived as held."""
    r = rng or random.Random()
    mac = bytes([0xCC, 0xDB, 0xA7]) + r.randbytes(3)
    device_id = mac_to_device_id(mac)
    return ProbeDevice(device_id, bytes.fromhex(derive_oob_v5(device_id)), "probe-child-0001")


def probe_embedded(
    flags: Flags,
    profile: str = "v5.0",
    environment: str = "production",
    bare_router: bool = False,
) -> ProbeResult:
    """Start the reference server as ``profile`` with ``flags``, seed a device and a child,
    and probe it."""
    device = probe_seed_device()
    seed = Seed(
        (SeedDevice(normalize_id(device.device_id), device.oob.hex().upper()),),
        (SeedChild(device.child_id),),
    )
    declared = make_profile(profile, flags, environment=environment, bare_router=bare_router)
    with embedded_server(declared, seed) as server:
        result = asyncio.run(probe_target(server.url, device))
    result.target = f"embedded ({declared.name}, {flags.describe()})"
    return result


def device_from_fleet(path: str) -> ProbeDevice:
    """The first provisioned, active device with an upper-case letter and an active child."""
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
