"""Small HTTP/1.1 clients for the server tests: stdlib ``http.client`` and raw asyncio streams.

Raw streams for the concurrency tests because they let every request be
written before any response is read, which is what makes "in flight together"
true on the server side.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from harness.protocol.claim import CLAIM_PATH

JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": "ESP32-TeddyBear/test"}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _encode(body: bytes | dict[str, Any] | str) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


class Client:
    """One kept-alive connection; reconnects if the server closed it."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(
        self, path: str, body: bytes | dict[str, Any] | str, headers: dict[str, str] | None = None
    ) -> Reply:
        return self.request("POST", path, _encode(body), {**JSON_HEADERS, **(headers or {})})

    def claim(self, body: bytes | dict[str, Any] | str, **headers: str) -> Reply:
        return self.post(CLAIM_PATH, body, headers)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


def raw_request(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"User-Agent: ESP32-TeddyBear/test\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def post_together(url: str, body: bytes, n: int, path: str = CLAIM_PATH) -> list[Reply]:
    """Open ``n`` connections, then send the same body on all of them at once, then read."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [await asyncio.open_connection(host, port) for _ in range(n)]
    payload = raw_request(host, port, path, body)
    for _, writer in conns:
        writer.write(payload)
    await asyncio.gather(*(writer.drain() for _, writer in conns))
    replies = await asyncio.gather(*(_read_reply(reader) for reader, _ in conns))
    for _, writer in conns:
        writer.close()
    return list(replies)
