"""Preflight: before a run against a target, is it a claim server that holds this fleet?

A soak or compat run against a server that does not have the fleet's devices
measures nothing but 404s, and a compat GO from such a measurement is the worst
wrong verdict there is. So every command with a ``--target`` first claims a few
of the fleet's provisioned, active devices (fresh nonces, one from each cohort
in turn): a target that answers without JSON or on a wrong path is not a claim
server, and one that says "not found" to most of them does not hold the fleet.
Both are bad configuration (exit 2 with one line), not a failed run.
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessInputError
from harness.fleet.model import Fleet, VirtualDevice
from harness.oracle import body_refusal
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.signing import sign_claim
from harness.tls import check_certificate
from harness.transport import TransportError, make_transport

SAMPLES = 6
# 404 is the device or the child; a routing 404/405 says "Not Found"/"Method Not Allowed".
ROUTING_DETAILS = ("Not Found", "Method Not Allowed")


@dataclass(slots=True)
class Preflight:
    """What the preflight claims got, per cohort (no IDs: cohort names and statuses)."""

    claims: list[tuple[str, int]] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "claims": [{"cohort": c, "status": s} for c, s in self.claims],
            "skipped": self.skipped,
        }


def sample_devices(fleet: Fleet, n: int = SAMPLES) -> list[VirtualDevice]:
    """Up to ``n`` provisioned, active devices with an active child and a valid body,
    taken round-robin over the cohorts that have them."""
    pools = []
    for cohort in fleet.cohorts:
        if not (cohort.provisioned and cohort.active and cohort.count):
            continue
        devs = [fleet.device(cohort.offset + i) for i in range(min(cohort.count, n))]
        devs = [d for d in devs if d.child_state == "active" and body_refusal(d) is None]
        if devs:
            pools.append(devs)
    picked: list[VirtualDevice] = []
    depth = 0
    while len(picked) < n and any(depth < len(p) for p in pools):
        picked.extend(p[depth] for p in pools if depth < len(p))
        depth += 1
    return picked[:n]


def error_message(body: bytes) -> str | None:
    """An error body's reason in either shape: FastAPI's ``{"detail"}`` or the deployed
    app's ``{"error": {"message"}}``; None when it is neither."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    detail = data.get("detail")
    if isinstance(detail, str):
        return detail
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None


async def ensure_reachable(
    base_url: str, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Any HTTP answer to ``GET /health`` will do; no answer at all is a bad ``--target``,
    and so is a TLS certificate that fails verification (said as such, harness.tls)."""
    transport = make_transport(
        base_url, mode="fresh", timeout=timeout, max_connections=1, ssl_context=ssl_context
    )
    try:
        await transport.get("/health")
    except TransportError as exc:
        await check_certificate(base_url, ssl_context, timeout)
        raise HarnessInputError("--target", f"cannot reach {base_url}: {exc}") from None
    finally:
        await transport.aclose()


async def preflight(
    base_url: str,
    fleet: Fleet,
    claim_path: str = CLAIM_PATH,
    timeout: float = 10.0,
    option: str = "--target",
    ssl_context: ssl.SSLContext | None = None,
) -> Preflight:
    """Reach the target, then claim a few of the fleet's devices; raise
    ``HarnessInputError`` when it cannot be reached, is not a claim server or does not
    hold the fleet. ``ssl_context``: the run's (``harness.tls.client_context``)."""
    await ensure_reachable(base_url, timeout, ssl_context)
    devices = sample_devices(fleet)
    if not devices:
        return Preflight(skipped="the fleet has no provisioned, active device to claim with")
    transport = make_transport(
        base_url, mode="fresh", timeout=timeout, max_connections=4, ssl_context=ssl_context
    )
    result = Preflight()
    try:
        for dev in devices:
            nonce = os.urandom(16).hex()
            body = dev.body(nonce, sign_claim(dev.device_id, dev.child_id, nonce, dev.oob,
                                              dev.signing))  # fmt: skip
            try:
                answer = await transport.post(claim_path, body, dev.headers)
            except TransportError as exc:
                raise HarnessInputError(option, f"{base_url}{claim_path}: no answer to a "
                                        f"preflight claim ({exc})") from None  # fmt: skip
            _check_claim_server(answer.status, answer.body, base_url + claim_path, option)
            result.claims.append((dev.cohort.name, answer.status))
    finally:
        await transport.aclose()
    missing = sum(1 for _, status in result.claims if status == 404)
    if missing * 2 > len(result.claims):
        if await _database_down(base_url, timeout, ssl_context):
            # v5.0 turns a PostgreSQL outage into 404s (CONTRACT.md section 3): that is a
            # finding to measure, not a target without the fleet.
            result.skipped = "most preflight claims got 404 while /health/db answers 503"
            return result
        raise HarnessInputError(
            option,
            f"{base_url} does not hold this fleet's devices ({missing} of {len(result.claims)} "
            f"preflight claims of provisioned devices got 404): load it first with "
            f"`harness provision export --fleet {fleet.source}`",
        )
    return result


async def _database_down(
    base_url: str, timeout: float, ssl_context: ssl.SSLContext | None = None
) -> bool:
    transport = make_transport(
        base_url, mode="fresh", timeout=timeout, max_connections=1, ssl_context=ssl_context
    )
    try:
        return (await transport.get("/health/db")).status == 503
    except TransportError:
        return False
    finally:
        await transport.aclose()


def _check_claim_server(status: int, body: bytes, where: str, option: str) -> None:
    """One line, exit 2, for answers no claim server gives."""
    if status == 200:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not (isinstance(data, dict) and "access_token" in data):
            raise HarnessInputError(
                option,
                f"{where}: 200 without a JSON token body: "
                "not a claim server (wrong --target or --claim-path?)",
            )
        return
    message = error_message(body)
    if message is None and status != 422:
        raise HarnessInputError(
            option,
            f"{where}: {status} without a JSON error body: not a "
            "claim server (wrong --target or --claim-path?)",
        )
    if status in (404, 405) and message in ROUTING_DETAILS:
        raise HarnessInputError(
            option,
            f"{where}: {status} {message!r}: no claim endpoint "
            "there (wrong --target or --claim-path?)",
        )
