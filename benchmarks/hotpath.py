"""A minimal claim loop built from harness.protocol + transport + results: the floor.

The fleet runner (``harness.run``, benchmarked by ``benchmarks.soak_client``)
is what the issue's goals are about; this loop does the same per-claim work
with nothing else around it, so the difference between the two rows is the
runner's own overhead. Per claim, none skipped: fresh nonce, HMAC, JSON body, the POST,
response parse, oracle-like status check (this fleet must get 200), token
checks on every 200 (claims of both tokens: sub, device_id, child_id, aud, iss,
type, iat/exp, session_id), ``X-Correlation-Id`` check, and recording into
``RunResults`` (HDR histograms). The HS256 signature is verified with pyjwt on
one 200 in ``verify_every`` (stated in the output): pyjwt 2.15 spends about
100 µs per decode even unverified (a per-character Python check of the base64
alphabet), which alone would cap a core near 5,000 claims/s.

Run: ``python -m benchmarks.hotpath --url http://127.0.0.1:8000 --mode keepalive``
(prints one JSON object), so each client gets its own process and CPU account.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import os
import re
import resource
import sys
import time
from hashlib import sha256
from hmac import new as hmac_new
from typing import Any

from benchmarks.fleet import BENCH_JWT_SECRET, DEFAULT_DEVICES, bench_fleet
from harness.protocol import ClaimResponse, check_token, normalize_id
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.tokens import ACCESS_TTL, AUDIENCE, ISSUER, REFRESH_TTL, TOKEN_TYPES
from harness.results import CONNECTION_ERROR, TIMEOUT, RunResults
from harness.transport import (
    TransportConnectionError,
    TransportTimeout,
    install_uvloop,
    make_transport,
)

SCENARIO = "first_claim"
_JWT = re.compile(r"[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+")
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")


def token_claims(token: object) -> dict[str, Any] | None:
    """A JWT's payload without verifying it: its alphabet checked by one C regex, then decoded.

    The same checks pyjwt makes before verification, at C speed (see module doc).
    """
    m = _JWT.fullmatch(token) if isinstance(token, str) else None
    if m is None:
        return None
    seg = m.group(1).encode().translate(_URL_TO_STD)
    try:
        payload = json.loads(binascii.a2b_base64(seg + b"=" * (-len(seg) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def claim_problems(claims: dict[str, Any] | None, d: str, c: str, kind: str) -> bool:
    """True when a token's claims break the contract (step 7) for normalised IDs d, c."""
    if claims is None:
        return True
    iat, exp = claims.get("iat"), claims.get("exp")
    ttl = ACCESS_TTL if kind == "access" else REFRESH_TTL
    return (
        claims.get("sub") != f"device:{d}:child:{c}"
        or claims.get("device_id") != d
        or claims.get("child_id") != c
        or claims.get("aud") != AUDIENCE
        or claims.get("iss") != ISSUER
        or claims.get("type") != TOKEN_TYPES[kind]
        or not isinstance(iat, int)
        or not isinstance(exp, int)
        or exp - iat != ttl
        or (kind == "access" and not claims.get("session_id"))
    )


async def run_hot_path(
    url: str,
    mode: str,
    duration: float,
    concurrency: int = 50,
    devices: int = DEFAULT_DEVICES,
    jwt_secret: str = BENCH_JWT_SECRET,
    verify_every: int = 100,
) -> dict[str, Any]:
    """Claim for ``duration`` seconds with ``concurrency`` devices in flight; a figures dict."""
    fleet = [
        (dev, dev.normalized_id, normalize_id(dev.child_id))
        for dev in bench_fleet(devices).devices()
    ]
    transport = make_transport(url, mode=mode, max_connections=concurrency)  # type: ignore[arg-type]
    results = RunResults()
    first = results.check("first_claim")
    tokens = results.check("token_claims")
    corr = results.check("correlation_id")
    loop = asyncio.get_running_loop()
    n_fleet = len(fleet)
    counter = 0
    verified = 0

    async def device_loop(start: int, stop_at: float) -> None:
        nonlocal counter, verified
        i = start
        now = loop.time
        clock = time.perf_counter
        while now() < stop_at:
            dev, d, c = fleet[i % n_fleet]
            i += concurrency
            nonce = os.urandom(16).hex()
            body = dev.body(nonce, hmac_new(dev.oob, dev.message(nonce), sha256).hexdigest())
            t0 = clock()
            try:
                resp = await transport.post(CLAIM_PATH, body, dev.headers)
            except TransportTimeout:
                results.record_claim(SCENARIO, TIMEOUT, clock() - t0)
                first.record(False)
                continue
            except TransportConnectionError:
                results.record_claim(SCENARIO, CONNECTION_ERROR, clock() - t0)
                first.record(False)
                continue
            latency = clock() - t0
            status = resp.status
            first.record(status == 200)
            corr.record("x-correlation-id" in resp.headers)
            if status == 200:
                counter += 1
                try:
                    answer = ClaimResponse.from_dict(json.loads(resp.body))
                except ValueError:  # ProtocolError and JSONDecodeError are ValueErrors
                    bad = True
                else:
                    bad = claim_problems(
                        token_claims(answer.access_token), d, c, "access"
                    ) or claim_problems(token_claims(answer.refresh_token), d, c, "refresh")
                    if not bad and counter % verify_every == 0:
                        verified += 1
                        bad = not check_token(
                            answer.access_token, dev.device_id, dev.child_id, secret=jwt_secret
                        ).ok
                tokens.record(not bad)
            results.record_claim(SCENARIO, str(status), latency)

    before = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    stop_at = loop.time() + duration
    await asyncio.gather(*(device_loop(k, stop_at) for k in range(concurrency)))
    elapsed = time.perf_counter() - t_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    await transport.aclose()
    results.duration_s = elapsed
    return figures(results, mode, elapsed, cpu_seconds(before, after), verify_every, verified)


def cpu_seconds(before: resource.struct_rusage, after: resource.struct_rusage) -> float:
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def figures(
    results: RunResults, mode: str, elapsed: float, cpu: float, verify_every: int, verified: int
) -> dict[str, Any]:
    """The numbers every client part reports, in one shape."""
    return {
        "mode": mode,
        "claims": results.sent,
        "seconds": elapsed,
        "rate": results.sent / elapsed if elapsed else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_claim": cpu / results.sent * 1e6 if results.sent else None,
        "verify_every": verify_every,
        "signatures_verified": verified,
        "ok": results.by_status.get("200", 0),
        "checks_passed": results.passed,
        "by_status": dict(results.by_status),
        "p50_s": results.latency.percentile(50),
        "p99_s": results.latency.percentile(99),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="minimal claim loop, one process")
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("keepalive", "fresh"), default="keepalive")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--jwt-secret", default=BENCH_JWT_SECRET)
    parser.add_argument("--verify-every", type=int, default=100)
    args = parser.parse_args(argv)
    install_uvloop()
    out = asyncio.run(
        run_hot_path(
            args.url,
            args.mode,
            args.duration,
            args.concurrency,
            args.devices,
            args.jwt_secret,
            args.verify_every,
        )
    )
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
