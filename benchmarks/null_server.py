"""A claim server that does no work: fixed, valid answers as fast as one core can write them.

It should not be the bottleneck of the comparison, so it is a bare asyncio
Protocol on uvloop with httptools parsing, and every complete response (a 200
with real HS256 tokens for each bench-fleet device) is built once at start-up.
Per request it finds the two IDs with one regex to pick the device's answer; it
checks no HMAC and keeps no nonces. It is still one Python process: the
benchmark reports its CPU share per part, so a part that saturated it says so.

Run: ``python -m benchmarks.null_server --port P [--devices N]``; prints
``READY <port>`` on stdout once listening.
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

import httptools
import jwt

from benchmarks.fleet import BENCH_JWT_SECRET, DEFAULT_DEVICES, bench_fleet
from harness.protocol.claim import CLAIM_PATH
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
    reason = {200: "OK", 404: "Not Found"}.get(status, "OK")
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


async def serve(port: int, n_devices: int, host: str = "127.0.0.1") -> None:
    answers = build_answers(n_devices)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _NullProtocol(answers), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"READY {bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.devices))


if __name__ == "__main__":
    main()
