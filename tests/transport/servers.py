"""Tiny real HTTP/1.1 servers for transport tests: asyncio sockets, scripted answers.

Each server counts the connections it accepted and the requests it read, so
tests can prove reuse, closing and "never sent twice" from the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Seen:
    """What the server observed."""

    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[Request] = field(default_factory=list)


Handler = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request (Content-Length bodies only; that is all the client sends)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


def reply(status: int, body: bytes, *, close: bool = False, extra: str = "") -> bytes:
    conn = "close" if close else "keep-alive"
    return (
        f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nConnection: {conn}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def echo(req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """200 with the request body; honours ``Connection: close``. Returns keep-going."""
    close = req.headers.get("connection", "").lower() == "close"
    writer.write(
        reply(200, req.body or b"{}", close=close, extra="X-Seen: yes\r\nX-Seen: twice\r\n")
    )
    await writer.drain()
    return not close


class ScriptedServer:
    """An asyncio server (optionally TLS) running ``handler`` for every request."""

    def __init__(self, handler: Handler = echo, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.seen = Seen()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = self.seen
        seen.connections += 1
        seen.open_now += 1
        seen.max_open = max(seen.max_open, seen.open_now)
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    break
                seen.requests.append(req)
                if not await self.handler(req, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            seen.open_now -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def self_signed(hostname: str = "localhost") -> tuple[bytes, bytes]:
    """A fresh self-signed certificate (with IP and DNS SANs) and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem
