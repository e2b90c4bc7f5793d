"""The claim hot path's HTTP/1.1 client: asyncio Protocols plus httptools, nothing heavier.

Chosen by measurement (issue 6): httpx manages about 600 claims/s on this class of
machine, aiohttp about 3,500, while a bare asyncio Protocol with the llhttp parser
(httptools) on uvloop reaches the tens of thousands, so the harness, not the
client library, sets the pace. Two modes:

- ``fresh``: one TCP (or TLS) connection per request with ``Connection: close``,
  as the ESP32 firmware does;
- ``keepalive``: a pool of up to ``max_connections`` persistent connections. A
  connection the server closed while idle is replaced before the request is
  written; a request that may have reached the server is never sent again
  (that would be a second claim): it fails with :class:`TransportConnectionError`.

Every failure is one of three exceptions, so callers map outcomes without
knowing about sockets: :class:`TransportTimeout` (no full answer in time) and
:class:`TransportConnectionError` (refused, reset, closed early, malformed), both
:class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httptools

from harness.errors import HarnessInputError

Mode = Literal["fresh", "keepalive"]
# Idle connections older than this are closed instead of reused: below the
# 5 s keep-alive timeout of uvicorn and most servers, so the server rarely closes
# a connection under a request we are about to send.
DEFAULT_MAX_IDLE_S = 4.0


@dataclass(slots=True)
class HttpResponse:
    """One complete HTTP answer; header names lower-case, repeated headers joined by ", "."""

    status: int
    headers: dict[str, str]
    body: bytes


class TransportError(Exception):
    """Base of every transport failure."""


class TransportTimeout(TransportError):
    """No full answer arrived within the timeout (connect included)."""


class TransportConnectionError(TransportError):
    """Refused, reset, closed before the answer was complete, TLS failure or malformed answer."""


class Transport(Protocol):
    """What the fleet runner, probe and benchmarks call; both modes implement it."""

    async def post(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> HttpResponse: ...

    async def get(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Target:
    """A parsed base URL: where to connect and what every request line starts with."""

    host: str
    port: int
    tls: bool
    prefix: str
    host_header: str

    @classmethod
    def parse(cls, base_url: str) -> _Target:
        try:
            parts = urlsplit(base_url)
            port = parts.port
        except ValueError as exc:
            raise HarnessInputError("target", f"bad URL {base_url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HarnessInputError(
                "target", f"expected http://host[:port][/prefix] or https://..., got {base_url!r}"
            )
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        port = port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        return cls(host, port, tls, parts.path.rstrip("/"), host_header)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; httptools does the parsing."""

    __slots__ = (
        "_body",
        "_framed",
        "_headers",
        "_parser",
        "_transport",
        "_waiter",
        "closed",
        "idle_since",
        "keep_alive",
    )

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._framed = False  # Content-Length or chunked: the body does not end at EOF
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(TransportConnectionError("server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(TransportConnectionError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._parser_headers_done() and not self._framed:
            self._complete()  # body delimited by EOF (no Content-Length, not chunked)
            return
        reason = f": {exc}" if exc else ""
        waiter.set_exception(
            TransportConnectionError(f"connection closed before the answer{reason}")
        )

    # --- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length" or (
                lname == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
        self._headers.append((b"", b""))  # marker: headers done (see _parser_headers_done)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete()

    # --- use ------------------------------------------------------------------
    def _parser_headers_done(self) -> bool:
        return bool(self._headers) and self._headers[-1] == (b"", b"")

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        headers: dict[str, str] = {}
        for name, value in self._headers:
            if not name:
                continue
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.keep_alive = self._parser.should_keep_alive() and not self.closed
        waiter.set_result(
            HttpResponse(self._parser.get_status_code(), headers, b"".join(self._body))
        )

    def _fail(self, exc: TransportError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def send(self, data: bytes) -> asyncio.Future[HttpResponse]:
        """Write one request; the future resolves with its complete answer."""
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers = []
        self._body = []
        self.keep_alive = False
        self._transport.write(data)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class _HttpClient:
    """Both modes share request building, connecting and error mapping; they differ in reuse."""

    def __init__(
        self,
        base_url: str,
        *,
        mode: Mode,
        timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None,
        max_idle: float,
    ) -> None:
        if mode not in ("fresh", "keepalive"):
            raise HarnessInputError("transport mode", f"expected fresh or keepalive, got {mode!r}")
        if timeout <= 0:
            raise HarnessInputError("timeout", f"must be > 0 seconds, got {timeout}")
        if max_connections < 1:
            raise HarnessInputError("max_connections", f"must be >= 1, got {max_connections}")
        self._target = _Target.parse(base_url)
        self._keepalive = mode == "keepalive"
        self._timeout = timeout
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None
        if self._target.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._closed = False
        conn_header = "keep-alive" if self._keepalive else "close"
        self._fixed = f"Host: {self._target.host_header}\r\nConnection: {conn_header}\r\n"

    # --- public API -----------------------------------------------------------
    async def post(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> HttpResponse:
        head = self._head("POST", path, headers, len(body), "Content-Type: application/json\r\n")
        return await self._request(head + body)

    async def get(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse:
        return await self._request(self._head("GET", path, headers, None, ""))

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.abort()
        self._busy.clear()
        await asyncio.sleep(0)  # let transports run their close callbacks

    async def __aenter__(self) -> _HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- internals ------------------------------------------------------------
    def _head(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        length: int | None,
        content_type: str,
    ) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        size = f"Content-Length: {length}\r\n" if length is not None else ""
        line = f"{method} {self._target.prefix}{path} HTTP/1.1\r\n"
        return f"{line}{self._fixed}{size}{content_type}{extra}\r\n".encode("latin-1")

    async def _request(self, data: bytes) -> HttpResponse:
        if self._closed:
            raise TransportConnectionError("transport is closed")
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
                try:
                    conn = self._reuse() or await self._connect()
                    self._busy.add(conn)
                    response = await conn.send(data)
                finally:
                    self._slots.release()
        except TimeoutError:
            if conn is not None:
                conn.abort()
            raise TransportTimeout(f"no complete answer within {self._timeout:g} s") from None
        except TransportError:
            if conn is not None:
                conn.abort()
            raise
        except BaseException:
            if conn is not None:
                conn.abort()  # cancelled mid-request: the connection's state is unknown
            raise
        finally:
            if conn is not None:
                self._busy.discard(conn)
        if self._keepalive and conn.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _reuse(self) -> _Connection | None:
        """The most recently used idle connection the server has not closed, if any."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self._max_idle:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        target = self._target
        try:
            _, conn = await loop.create_connection(
                _Connection,
                target.host,
                target.port,
                ssl=self._ssl,
                server_hostname=target.host if self._ssl else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise TransportConnectionError(
                f"cannot connect to {target.host}:{target.port}: {exc}"
            ) from None
        return conn


def make_transport(
    base_url: str,
    *,
    mode: Mode = "fresh",
    timeout: float = 10.0,
    max_connections: int = 100,
    ssl_context: ssl.SSLContext | None = None,
    max_idle: float = DEFAULT_MAX_IDLE_S,
) -> Transport:
    """A transport for ``base_url`` (``http(s)://host[:port][/prefix]``); call inside a loop.

    ``timeout`` bounds each request as a whole (waiting for a pool slot, connecting,
    TLS, writing, reading the full answer). ``max_connections`` caps requests in
    flight (and, in keepalive mode, open connections).
    """
    return _HttpClient(
        base_url,
        mode=mode,
        timeout=timeout,
        max_connections=max_connections,
        ssl_context=ssl_context,
        max_idle=max_idle,
    )


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when it is installed; returns whether it is in use."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
