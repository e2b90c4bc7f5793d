"""A claim server that does no work: fixed, valid answers as fast as one core can write them.

It should not be the bottleneck of the comparison, so it is a bare asyncio
Protocol on uvloop with httptools parsing, and every complete response (a 200
with real HS256 tokens for each bench-fleet device) is built once at start-up.
Per request it finds the two IDs with one regex to pick the device's answer; it
checks no HMAC and keeps no nonces. It is still one Python process: the
benchmark reports its CPU share per part, so a part that saturated it says so.

With ``--fleet PATH`` (the soak fleet) it answers that fleet instead, as the
oracle says a v5.0 server with the default flags would: each device's answers
to a good and to a bad HMAC are built at start-up (``harness.oracle``), and per
request it checks the HMAC (one HMAC-SHA256 with the key schedule done once), a
63-digit ``hmac_hex`` (422) and a reused nonce (409, idempotency off). That is
the soak fleet's mix of 200s, 4xx and replays at a cost no real server matches,
so what a run measures is the harness's own CPU per claim.

Run: ``python -m benchmarks.null_server --port P [--devices N | --fleet PATH]``;
prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable

import httptools
import jwt

from benchmarks.fleet import BENCH_JWT_SECRET, DEFAULT_DEVICES, bench_fleet
from harness.fleet.loader import load_fleet
from harness.oracle import Expectation, expect_send
from harness.profiles import ServerProfile
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.signing import PrefixedHmac
from harness.protocol.tokens import ACCESS_TTL, AUDIENCE, ISSUER, REFRESH_TTL

_NOT_FOUND = b'{"detail":"Device not found"}'


def _token(d: str, c: str, kind: str, ttl: int, iat: int) -> str:
    claims = {
        "sub": f"device:{d}:child:{c}",
        "device_id": d,
        "child_id": c,
        "type": kind,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": iat,
        "exp": iat + ttl,
    }
    if kind == "device_access":
        claims["session_id"] = str(uuid.uuid4())
    return jwt.encode(claims, BENCH_JWT_SECRET, algorithm="HS256")


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Other")
    conn = "keep-alive" if keep_alive else "close"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"x-correlation-id: 00000000-0000-4000-8000-000000000000\r\n"
        f"connection: {conn}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


Answer = tuple[bytes, bytes]  # the whole HTTP response: (keep-alive, Connection: close)


def _both(status: int, body: bytes) -> Answer:
    return _response(status, body, True), _response(status, body, False)


def build_answers(n_devices: int) -> dict[bytes, Answer]:
    """Complete 200 responses keyed by the normalised ``device_id|child_id`` the server keys on."""
    iat = int(time.time())
    answers = {}
    for dev in bench_fleet(n_devices).devices():
        d, c = dev.device_id.strip().lower(), dev.child_id.strip().lower()
        body = {
            "access_token": _token(d, c, "device_access", ACCESS_TTL, iat),
            "refresh_token": _token(d, c, "device_refresh", REFRESH_TTL, iat),
            "token_type": "Bearer",
            "expires_in": ACCESS_TTL,
            "device_session_id": str(uuid.uuid4()),
            "child_profile": {"child_id": c},
            "device_config": {},
        }
        answers[f"{d}|{c}".encode()] = _both(200, json.dumps(body, separators=(",", ":")).encode())
    return answers


def _status_answer(dev: object, exp: Expectation, iat: int) -> Answer:
    status = min(exp.statuses)
    if status != 200:
        body = json.dumps({"error": {"code": str(status), "message": exp.why}}).encode()
        return _both(status, body)
    d, c = dev.norm_ids  # type: ignore[attr-defined]
    body = {
        "access_token": _token(d, c, "device_access", ACCESS_TTL, iat),
        "refresh_token": _token(d, c, "device_refresh", REFRESH_TTL, iat),
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL,
    }
    return _both(200, json.dumps(body, separators=(",", ":")).encode())


# Per device as sent (``device_id|child_id``): its HMAC key, answers to a good and a bad HMAC.
FleetAnswers = dict[bytes, tuple[PrefixedHmac, Answer, Answer]]


def build_fleet_answers(path: str) -> FleetAnswers:
    """Every device of the fleet at ``path``: what the oracle says v5.0 answers it."""
    fleet = load_fleet(path)
    profile = ServerProfile()
    iat = int(time.time())
    out: FleetAnswers = {}
    for dev in fleet.devices():
        good = _status_answer(dev, expect_send(profile, dev, "good"), iat)
        bad = _status_answer(dev, expect_send(profile, dev, "bad"), iat)
        key = f"{dev.device_id}|{dev.child_id}".encode()
        out[key] = (PrefixedHmac(dev.oob, dev.message("")), good, bad)
    return out


# The two IDs, wherever they sit in the body (one C-level search instead of a JSON parse).
_IDS = re.compile(rb'"device_id"\s*:\s*"([^"]*)".*?"child_id"\s*:\s*"([^"]*)"', re.S)
_NOT_FOUND_ANSWER = _both(404, _NOT_FOUND)
_HEALTH_ANSWER = _both(200, b'{"status":"ok"}')
_CLAIM = CLAIM_PATH.encode()


class _NullProtocol(asyncio.Protocol):
    """One connection; answers each request in order (pipelining works too)."""

    def __init__(self, answers: dict[bytes, Answer]) -> None:
        self._answers = answers
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        keep = self._parser.should_keep_alive()
        answer = _NOT_FOUND_ANSWER
        if self._url.endswith(_CLAIM):
            m = _IDS.search(b"".join(self._body))
            if m is not None:
                key = m[1].strip().lower() + b"|" + m[2].strip().lower()
                answer = self._answers.get(key, _NOT_FOUND_ANSWER)
        elif self._url == b"/health":
            answer = _HEALTH_ANSWER
        self._transport.write(answer[0] if keep else answer[1])
        if not keep:
            self._transport.close()


# A claim body as the harness writes it (harness.fleet.model.VirtualDevice.body).
_CLAIM_FIELDS = re.compile(
    rb'"device_id":"([^"]*)","child_id":"([^"]*)","nonce":"([^"]*)","hmac_hex":"([^"]*)"'
)
_INVALID = _both(422, b'{"error":{"code":"422","message":"hmac_hex"}}')
_REPLAYED = _both(409, b'{"error":{"code":"409","message":"nonce reused"}}')


class _FleetProtocol(_NullProtocol):
    """The soak fleet's answers: validation, a used nonce, then the HMAC, as v5.0 orders them."""

    def __init__(self, answers: FleetAnswers, nonces: set[bytes]) -> None:
        super().__init__({})
        self._fleet = answers
        self._nonces = nonces

    def on_message_complete(self) -> None:
        assert self._transport is not None
        keep = self._parser.should_keep_alive()
        answer = _NOT_FOUND_ANSWER
        m = _CLAIM_FIELDS.search(b"".join(self._body)) if self._url.endswith(_CLAIM) else None
        if m is not None:
            entry = self._fleet.get(m[1] + b"|" + m[2])
            nonce, mac = m[3], m[4]
            if entry is None:
                answer = _NOT_FOUND_ANSWER
            elif entry[1][0][9:12] == b"422" or len(mac) != 64:
                answer = entry[1] if len(mac) == 64 else _INVALID
            elif nonce in self._nonces:
                answer = _REPLAYED
            else:
                self._nonces.add(nonce)
                good = entry[0].hexdigest(bytes.fromhex(nonce.decode())).encode() == mac
                answer = entry[1] if good else entry[2]
        elif self._url == b"/health":
            answer = _HEALTH_ANSWER
        self._transport.write(answer[0] if keep else answer[1])
        if not keep:
            self._transport.close()


async def serve(
    port: int, n_devices: int, host: str = "127.0.0.1", fleet: str | None = None
) -> None:
    loop = asyncio.get_running_loop()
    if fleet is None:
        answers = build_answers(n_devices)
        make: Callable[[], asyncio.Protocol] = lambda: _NullProtocol(answers)  # noqa: E731
    else:
        fleet_answers, nonces = build_fleet_answers(fleet), set()
        make = lambda: _FleetProtocol(fleet_answers, nonces)  # noqa: E731
    server = await loop.create_server(make, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--fleet", help="answer this fleet file's devices (the soak fleet)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.devices, fleet=args.fleet))


if __name__ == "__main__":
    main()
