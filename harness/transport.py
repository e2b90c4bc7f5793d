"""The claim hot path's HTTP/1.1 client: asyncio Protocols plus httptools, nothing heavier.

Chosen by measurement (issue 6): httpx manages about 600 claims/s on this class of
machine, aiohttp about 3,500, while a bare asyncio Protocol with the llhttp parser
(httptools) on uvloop reaches the tens of thousands (measured on the project's
2-core machine: 36,000-43,000 kept-alive requests/s at about 25 µs CPU each), so
the harness, not the client library, sets the pace. Two modes:

- ``fresh``: one TCP (or TLS) connection per request with ``Connection: close``,
  as the ESP32 firmware does;
- ``keepalive``: a pool of up to ``max_connections`` persistent connections. A
  connection the server closed while idle is replaced before the request is
  written; a request that may have reached the server is never sent again
  (that would be a second claim): it fails with :class:`TransportConnectionError`.

Requests made during one pass of the event loop are written back to back at the
start of the next pass (one ``call_soon`` per burst), not one by one as each is
made: on the project's 2-core machine this halved the system CPU per claim and
cut the total by about a quarter, because the server is woken once per burst
instead of once per request. The wait is bounded by one loop pass and falls
inside the latency the caller measures (its clock starts before ``post``), so
it is counted, never hidden.

Timeouts of requests in flight are checked by one sweep every ``timeout / 10``
(at most 0.1 s), so a timeout fires up to that much late. Host names are
resolved once per ``DNS_CACHE_S``.

Every failure is one of three exceptions, so callers map outcomes without
knowing about sockets: :class:`TransportTimeout` (no full answer in time) and
:class:`TransportConnectionError` (refused, reset, closed early, malformed), both
:class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence
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
# How long a host name's addresses are reused before resolving again. The firmware's
# lwIP keeps a DNS cache too; resolving per claim would cost a getaddrinfo (a thread
# hop, often a DNS query) for every fresh connection.
DNS_CACHE_S = 30.0
# What may not reach the request head (it would split or corrupt the request).
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Response header names as received -> lower-cased str: a server sends the same few names
# on every answer. Bounded, so a server inventing names cannot grow it.
_HEADER_NAMES: dict[bytes, str] = {}
_HEADER_NAMES_MAX = 256


# A claim answer is a few hundred bytes (2 KiB with v5-head's pairing fields); a server
# answering megabytes is broken, and an outcome with a reason, not the harness's memory.
MAX_ANSWER_BYTES = 1 << 20


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

    def post_nowait(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]], done: Done
    ) -> None: ...

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


# What a request's answer or failure goes to (``post_nowait``): exactly one is not None.
Done = Callable[[HttpResponse | None, TransportError | None], None]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; httptools does the parsing.

    The pending request's ``done`` callback is called exactly once, with the answer or
    with the failure, right after the connection went back to its pool (so ``done`` may
    send the next request on it at once).
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_done",
        "_headers",
        "_headers_done",
        "_parser",
        "_pool",
        "_transport",
        "closed",
        "deadline",
        "idle_since",
        "keep_alive",
    )

    def __init__(self, pool: _HttpClient) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._done: Done | None = None
        self._headers: dict[str, str] = {}
        self._headers_done = False
        self._body: list[bytes] = []
        self._body_size = 0
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.deadline = 0.0  # loop time by which the pending answer must be complete

    # --- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(TransportConnectionError("server switched protocols"))
        except httptools.HttpParserError as exc:
            self.fail(TransportConnectionError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is None:
            return
        if self._headers_done and not self._framed():
            self._complete()  # body delimited by EOF (no Content-Length, not chunked)
            return
        reason = f": {exc}" if exc else ""
        self.fail(TransportConnectionError(f"connection closed before the answer{reason}"))

    # --- httptools callbacks ------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
                _HEADER_NAMES[name] = key
        headers = self._headers
        if key in headers:  # a repeated header: one value, comma-joined
            headers[key] = f"{headers[key]}, {value.decode('latin-1')}"
        else:
            headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > MAX_ANSWER_BYTES and self._done is not None:
            self.fail(TransportConnectionError(f"answer larger than {MAX_ANSWER_BYTES:,} bytes"))

    def on_message_complete(self) -> None:
        self._complete()

    # --- use ------------------------------------------------------------------
    @property
    def pending(self) -> Done | None:
        """The callback of the request waiting for its answer, if any."""
        return self._done

    def _framed(self) -> bool:
        """Content-Length or chunked: the body does not end at EOF."""
        headers = self._headers
        return (
            "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
        )

    def _complete(self) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        parser = self._parser
        self.keep_alive = parser.should_keep_alive() and not self.closed
        body = self._body
        response = HttpResponse(
            parser.get_status_code(), self._headers, body[0] if len(body) == 1 else b"".join(body)
        )
        self._pool._finished(self)
        self._pool._call(done, response, None)

    def fail(self, exc: TransportError) -> None:
        """End the pending request (if any) with ``exc`` and drop the connection."""
        done = self._done
        self._done = None
        self.abort()
        if done is not None:
            self._pool._finished(self)
            self._pool._call(done, None, exc)

    def expect(self, done: Done) -> None:
        """The next answer on this connection goes to ``done`` (write the request next)."""
        self._done = done
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._headers_done = False
        self.keep_alive = False

    def write(self, data: bytes) -> None:
        """Write a request (after ``expect``); a transport that is gone fails the request."""
        try:
            self._transport.write(data)  # type: ignore[union-attr]
        except (AttributeError, RuntimeError, OSError) as exc:
            self.fail(TransportConnectionError(f"cannot write the request: {exc}"))

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class _HttpClient:
    """Both modes share request building, connecting, the pool and error mapping.

    Speed matters here (every claim passes through), so the common case does no
    more than it must: request heads are cached per (method, path, headers), an
    idle connection is taken without any lock, and timeouts of in-flight requests
    are enforced by one periodic sweep over busy connections instead of a timer
    per request. Only opening a connection (or waiting for a free one) uses
    ``asyncio.timeout``.
    """

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
        if not timeout > 0:
            raise HarnessInputError("timeout", f"must be > 0 seconds, got {timeout}")
        if max_connections < 1:
            raise HarnessInputError("max_connections", f"must be >= 1, got {max_connections}")
        self._target = _Target.parse(base_url)
        self._keepalive = mode == "keepalive"
        self._timeout = timeout
        self._max_idle = max_idle
        self._max = max_connections
        self._ssl: ssl.SSLContext | None = None
        if self._target.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._opening = 0  # connections being opened (count towards the cap)
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._reserved = 0  # woken slot waiters that have not run yet (see _finished)
        self._opening_tasks: set[asyncio.Task[None]] = set()  # post_nowait's, see there
        self._heads: dict[tuple[str, str, Sequence[tuple[str, str]]], bytes] = {}
        self._sweep_every = max(0.005, min(0.1, timeout / 10))
        self._sweeping = False
        self._closed = False
        self._writes: list[tuple[_Connection, bytes]] = []  # requests for the next flush
        self._loop: asyncio.AbstractEventLoop | None = None
        self._addrs: list[tuple[int, str]] = []
        self._addrs_until = 0.0
        self._resolving: asyncio.Task[list[tuple[int, str]]] | None = None
        conn_header = "keep-alive" if self._keepalive else "close"
        self._fixed = f"Host: {self._target.host_header}\r\nConnection: {conn_header}\r\n"

    # --- public API -----------------------------------------------------------
    async def post(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> HttpResponse:
        head = self._head("POST", path, headers)
        return await self._request(b"%s%d\r\n\r\n%s" % (head, len(body), body))

    async def get(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse:
        return await self._request(self._head("GET", path, headers))

    def post_nowait(
        self, path: str, body: bytes, headers: Sequence[tuple[str, str]], done: Done
    ) -> None:
        """``post`` without a coroutine: ``done(answer, None)`` or ``done(None, failure)``
        is called later, exactly once, never before this returns.

        For the fleet runner's hot path: with an idle kept-alive connection at hand
        the request is queued at once and its answer handed over from inside the
        connection's callback, so no future, task or coroutine frame is made per
        request (about 6 of the 29 µs of CPU a bare kept-alive request costs,
        measured on the project's 2-core machine). Without one, a task opens or
        waits for a connection as ``post`` does. An exception ``done`` raises goes
        to the event loop's exception handler; callers should not raise.
        """
        head = self._head("POST", path, headers)
        data = b"%s%d\r\n\r\n%s" % (head, len(body), body)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            loop.call_soon(done, None, TransportConnectionError("transport is closed"))
            return
        deadline = loop.time() + self._timeout
        conn = self._reuse(loop)
        if conn is not None:
            self._begin(loop, conn, data, done, deadline)
            return
        task = loop.create_task(self._open_then_begin(data, done, deadline))
        self._opening_tasks.add(task)
        task.add_done_callback(self._opening_tasks.discard)

    async def aclose(self) -> None:
        self._closed = True
        if self._resolving is not None:
            self._resolving.cancel()
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.fail(TransportConnectionError("transport closed"))
        self._busy.clear()
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(TransportConnectionError("transport closed"))
        # Requests still connecting end too (their ``done`` runs before this returns), so
        # a run that stops with claims in flight accounts for every one of them.
        opening = list(self._opening_tasks)
        for task in opening:
            task.cancel()
        if opening:
            await asyncio.gather(*opening, return_exceptions=True)
        await asyncio.sleep(0)  # let transports run their close callbacks

    async def __aenter__(self) -> _HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- request heads ----------------------------------------------------------
    def _head(self, method: str, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
        """Everything before the body; a POST head ends in "Content-Length: " (number follows)."""
        try:
            key = (method, path, headers if isinstance(headers, tuple) else tuple(headers))
            cached = self._heads.get(key)
        except TypeError:  # unhashable header values: build without the cache
            return self._build_head(method, path, headers)
        if cached is None:
            cached = self._build_head(method, path, headers)
            if len(self._heads) < 1024:
                self._heads[key] = cached
        return cached

    def _build_head(self, method: str, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
        if not path.startswith("/") or _UNSAFE.search(path):
            raise HarnessInputError("path", f"must start with / and hold no spaces: {path!r}")
        for name, value in headers:
            if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
                raise HarnessInputError("header", f"bad HTTP header {name!r}: {value!r}")
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        line = f"{method} {self._target.prefix}{path} HTTP/1.1\r\n{self._fixed}{extra}"
        if method == "POST":
            return f"{line}Content-Type: application/json\r\nContent-Length: ".encode("latin-1")
        return f"{line}\r\n".encode("latin-1")

    # --- requests -----------------------------------------------------------------
    async def _request(self, data: bytes) -> HttpResponse:
        if self._closed:
            raise TransportConnectionError("transport is closed")
        loop = self._loop
        if loop is None:  # one loop per client; Python 3.11 asks getpid() on every lookup
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = self._reuse(loop)
        if conn is None:
            conn = await self._open(deadline)
        waiter: asyncio.Future[HttpResponse] = loop.create_future()

        def done(response: HttpResponse | None, exc: TransportError | None) -> None:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(response)  # type: ignore[arg-type]
                else:
                    waiter.set_exception(exc)

        self._begin(loop, conn, data, done, deadline)
        try:
            return await waiter
        except TransportError:
            raise
        except BaseException:  # cancelled: the connection's state is unknown
            if conn.pending is done:
                conn.fail(TransportConnectionError("request cancelled"))
            raise

    async def _open_then_begin(self, data: bytes, done: Done, deadline: float) -> None:
        """``post_nowait`` without an idle connection: get one as ``post`` does, then send."""
        try:
            conn = await self._open(deadline)
        except TransportError as exc:
            self._call(done, None, exc)
            return
        except asyncio.CancelledError:  # closed while connecting: the request still ends
            self._call(done, None, TransportConnectionError("transport closed"))
            raise
        self._begin(asyncio.get_running_loop(), conn, data, done, deadline)

    def _begin(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        data: bytes,
        done: Done,
        deadline: float,
    ) -> None:
        """Make ``conn`` carry one request; its write goes out with the next flush."""
        if self._closed:  # closed while a connection was being opened for this request
            conn.close()
            self._call(done, None, TransportConnectionError("transport closed"))
            return
        conn.deadline = deadline
        self._busy.add(conn)
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_every, self._sweep)
        conn.expect(done)
        writes = self._writes
        if not writes:  # the first request of this loop pass: flush them all next pass
            loop.call_soon(self._flush)
        writes.append((conn, data))

    def _finished(self, conn: _Connection) -> None:
        """``conn``'s request is over (answered or failed): back to the pool, or closed.

        A request waiting for a connection is woken and the connection is held for it
        (``_reserved``), so a ``post_nowait`` called before the waiter runs cannot take
        it: callbacks run before woken tasks, and could otherwise starve them.
        """
        self._busy.discard(conn)
        if self._keepalive and conn.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = self._loop.time()  # type: ignore[union-attr]
            self._idle.append(conn)
        else:
            conn.close()
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            nxt = waiters.popleft()
            if not nxt.done():
                self._reserved += 1
                nxt.set_result(None)
                return

    def _call(self, done: Done, response: HttpResponse | None, exc: TransportError | None) -> None:
        """Hand a request its outcome; a callback that raises is the caller's bug, reported
        to the loop, never taken for a malformed answer."""
        try:
            done(response, exc)
        except Exception as bug:  # reported to the loop, not swallowed
            loop = self._loop or asyncio.get_running_loop()
            loop.call_exception_handler(
                {"message": "a request's done callback raised", "exception": bug}
            )

    def _flush(self) -> None:
        """Write the requests queued during the last loop pass, back to back."""
        writes, self._writes = self._writes, []
        for conn, data in writes:
            if not conn.closed:  # else it failed, timed out or was cancelled meanwhile
                conn.write(data)

    def _sweep(self) -> None:
        """Fail in-flight requests past their deadline; runs only while requests are in flight."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn.fail(TransportTimeout(f"no complete answer within {self._timeout:g} s"))
        if self._busy and not self._closed:
            loop.call_later(self._sweep_every, self._sweep)
        else:
            self._sweeping = False

    def _reuse(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """The most recently used idle connection the server has not closed, if any
        is left after those held for woken waiters."""
        idle = self._idle
        if len(idle) <= self._reserved:
            return None
        now = loop.time()
        while len(idle) > self._reserved:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self._max_idle:
                conn.close()
                continue
            return conn
        return None

    def _open_count(self) -> int:
        return len(self._busy) + len(self._idle) + self._opening

    async def _open(self, deadline: float) -> _Connection:
        """A connection for one request: wait for room under the cap, then reuse or connect."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    conn = self._reuse(loop)
                    if conn is not None:
                        return conn
                    if self._open_count() + self._reserved < self._max:
                        break
                    slot: asyncio.Future[None] = loop.create_future()
                    self._slot_waiters.append(slot)
                    try:
                        await slot
                    finally:
                        if slot.done() and not slot.cancelled() and slot.exception() is None:
                            self._reserved -= 1  # woken (_wake_one): the held room is ours
                    if self._closed:  # woken by aclose's last _finished: open nothing
                        raise TransportConnectionError("transport closed")
                self._opening += 1
                try:
                    return await self._connect()
                finally:
                    self._opening -= 1
        except TimeoutError:
            raise TransportTimeout(f"no complete answer within {self._timeout:g} s") from None

    async def _addresses(self) -> list[tuple[int, str]]:
        """The target's (family, IP) list, resolved at most once per ``DNS_CACHE_S``."""
        loop = asyncio.get_running_loop()
        if self._addrs and loop.time() < self._addrs_until:
            return self._addrs
        task = self._resolving
        if task is None:  # one lookup shared by every request that needs it now
            task = self._resolving = loop.create_task(self._resolve())
            task.add_done_callback(self._resolved)
        return await asyncio.shield(task)

    def _resolved(self, task: asyncio.Task[list[tuple[int, str]]]) -> None:
        if self._resolving is task:
            self._resolving = None
        if not task.cancelled():
            task.exception()  # retrieved here, so a lookup nobody waits for any more stays quiet

    async def _resolve(self) -> list[tuple[int, str]]:
        loop = asyncio.get_running_loop()
        host, port = self._target.host, self._target.port
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise TransportConnectionError(f"cannot resolve {host}: {exc}") from None
            addrs = list(dict.fromkeys((fam, str(addr[0])) for fam, _, _, _, addr in infos))
            until = loop.time() + DNS_CACHE_S
        else:
            addrs = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, host)]
            until = float("inf")
        if not addrs:
            raise TransportConnectionError(f"cannot resolve {host}: no addresses")
        self._addrs, self._addrs_until = addrs, until
        return addrs

    async def _connect(self) -> _Connection:
        """Connect to the first address that accepts (TLS names the host, not the IP)."""
        loop = asyncio.get_running_loop()
        target = self._target
        failure: BaseException | None = None
        for family, ip in await self._addresses():
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    ip,
                    target.port,
                    family=family,
                    ssl=self._ssl,
                    server_hostname=target.host if self._ssl else None,
                )
            except ssl.SSLError as exc:  # the server answered: another address will not help
                failure = exc
                break
            except OSError as exc:
                failure = exc
                continue
            return conn
        self._addrs_until = 0.0  # resolve again next time: the addresses may have moved
        raise TransportConnectionError(
            f"cannot connect to {target.host}:{target.port}: {failure}"
        ) from None


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
