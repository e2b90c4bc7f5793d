"""``FaultProxy``: a TCP proxy in front of any service that misbehaves on command.

It runs in the caller's event loop (asyncio streams). The mode can change at
any moment and applies at once, to new connections and to open ones, so a
test or a soak can open and close a fault window while clients are mid-request.
No exception raised by a client or the upstream ever leaves a connection's
handler: the proxy has to keep serving through whatever it is provoking.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import struct
from dataclasses import asdict, dataclass

from harness.errors import HarnessInputError
from harness.faults.modes import (
    Blackhole,
    Cut,
    Delay,
    Drop,
    Mode,
    Pass,
    Reset,
    SlowClose,
    as_mode,
)

CHUNK = 65536
CONNECT_TIMEOUT_S = 10.0
LINGER_S = 2.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of what the proxy did, so a run can say how many connections a fault touched."""

    accepted: int = 0
    affected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    upstream_errors: int = 0
    open: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Counters:
    accepted: int = 0
    affected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    upstream_errors: int = 0


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER {1, 0} makes the kernel reset instead of sending FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    with contextlib.suppress(Exception):
        writer.close()


class _Link:
    """One client connection and (unless it was blackholed at accept) its upstream connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: Mode):
        self.client_reader = reader
        self.client_writer = writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.mode = mode
        self.cut_sent = 0  # response bytes sent since the current cut mode applied
        self.orphan = False  # accepted in a blackhole: it never gets an upstream
        self.closed = False
        self.rst = False
        self.counted = False
        self.changed = asyncio.Event()  # set on every mode change, for a pump parked in blackhole
        self.tasks: set[asyncio.Task[None]] = set()

    def close(self, *, rst: bool = False) -> None:
        """End the link now: RST, or FIN to the client (the handler then lingers, see there).

        The pumps notice through EOF or cancellation.
        """
        if self.closed:
            return
        self.closed = True
        self.rst = rst
        if rst:
            with contextlib.suppress(Exception):
                _rst(self.client_writer)
        else:
            with contextlib.suppress(Exception):
                if self.client_writer.can_write_eof():
                    self.client_writer.write_eof()
                else:
                    self.client_writer.close()
        _close(self.up_writer)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """A TCP proxy from ``host:port`` to ``upstream_host:upstream_port`` with a switchable fault.

    ``seed`` fixes the ``random.Random`` that picks which new connections a
    share mode (``reset@0.5``) affects, so a test sees the same picks each run.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self._requested_port = port
        self._rng = random.Random(seed)
        self._mode: Mode = Pass()
        self._counters = _Counters()
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; ``port`` is the real one afterwards (``port=0`` picks a free one)."""
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        except OSError as exc:
            raise HarnessInputError(
                "listen",
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}",
            ) from None
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every connection; waits a bounded time, never hangs."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.close()
        handlers = [t for t in self._handlers if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=STOP_TIMEOUT_S)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT_S)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port; only known after ``start``."""
        if self._port is None:
            raise RuntimeError("FaultProxy.port is known only after start()")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` to hand a client instead of the upstream's address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- mode ------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode | str) -> None:
        """Switch now: new connections get the mode, open ones are treated per its rule."""
        new = as_mode(mode)
        self._mode = new
        for link in list(self._links):
            self._apply(link, self._draw(new))

    async def run_schedule(self, schedule: list[tuple[float, Mode]]) -> None:
        """Apply ``(seconds from now, mode)`` steps in order, e.g. a 5-second outage window."""
        for offset, _ in schedule:
            if not (offset >= 0.0 and math.isfinite(offset)):  # refuses NaN and inf too
                raise HarnessInputError("schedule", f"offset {offset!r} must be >= 0 seconds")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for offset, mode in schedule:
            wait = start + offset - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.set_mode(mode)

    @property
    def stats(self) -> ProxyStats:
        return ProxyStats(
            **asdict(self._counters), open=sum(not link.closed for link in self._links)
        )

    def _draw(self, mode: Mode) -> Mode:
        """The mode one connection gets: a share mode passes the rest through."""
        if mode.share >= 1.0 or self._rng.random() < mode.share:
            return mode
        return Pass()

    def _apply(self, link: _Link, mode: Mode) -> None:
        """Give an open connection a new mode, closing it at once where the mode says so."""
        if link.closed:
            return
        link.mode = mode
        link.cut_sent = 0
        link.changed.set()
        if mode.is_fault and not link.counted:
            link.counted = True
            self._counters.affected += 1
        if isinstance(mode, Drop):
            link.close()
        elif isinstance(mode, Reset):
            self._counters.resets += 1
            link.close(rst=True)
        elif link.orphan and not isinstance(mode, Blackhole):
            # Accepted during a blackhole, it has no upstream and its bytes are gone: the
            # only honest way out of the blackhole for it is a close.
            link.close()

    # -- connections -----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(reader, writer, Pass())
        try:
            # A misbehaving peer must never stop the proxy: whatever it raises ends
            # this one connection and nothing more.
            with contextlib.suppress(Exception):
                await self._serve(link)
            link.close()
            await self._linger(link)
        except asyncio.CancelledError:
            pass  # stop(): close at once, below
        finally:
            link.close()
            _close(link.client_writer)
            _close(link.up_writer)
            for pump in link.tasks:
                pump.cancel()
            self._links.discard(link)
            self._handlers.discard(task)

    async def _linger(self, link: _Link) -> None:
        """After our FIN, read and discard until the client closes too (bounded).

        Closing a socket that still holds unread client bytes makes the kernel
        send RST, so without this a ``drop`` or a ``cut`` would look like a reset.
        """
        if link.rst or self._server is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LINGER_S):
                while await link.client_reader.read(CHUNK):
                    pass

    async def _serve(self, link: _Link) -> None:
        self._counters.accepted += 1
        mode = self._draw(self._mode)
        if self._server is None:  # stopping
            return
        self._links.add(link)
        link.orphan = isinstance(mode, Blackhole)
        self._apply(link, mode)
        if link.closed:  # drop or reset at accept
            return
        if not link.orphan:
            try:
                link.up_reader, link.up_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.upstream_host, self.upstream_port),
                    CONNECT_TIMEOUT_S,
                )
            except (TimeoutError, OSError):
                self._counters.upstream_errors += 1
                return  # the client sees the service down: its connection is closed
            if link.closed:  # dropped or reset while connecting
                return
        link.tasks.add(asyncio.create_task(self._pump_up(link)))
        if link.up_reader is not None:
            link.tasks.add(asyncio.create_task(self._pump_down(link)))
        await asyncio.wait(link.tasks)

    async def _pump_up(self, link: _Link) -> None:
        """Client to upstream until the client's EOF, then half-close the upstream."""
        try:
            while True:
                data = await link.client_reader.read(CHUNK)
                if not data or link.closed:
                    break
                mode = link.mode
                if isinstance(mode, Blackhole) or link.up_writer is None:
                    continue
                if isinstance(mode, Delay) and mode.seconds > 0:
                    await asyncio.sleep(mode.seconds)
                if link.closed:
                    break
                link.up_writer.write(data)
                await link.up_writer.drain()
                self._counters.bytes_up += len(data)
            if link.up_writer is not None and not link.closed:
                if link.up_writer.can_write_eof():
                    link.up_writer.write_eof()
                else:
                    link.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            link.close()

    async def _pump_down(self, link: _Link) -> None:
        """Upstream to client until the upstream's EOF; cut and slowclose act here."""
        assert link.up_reader is not None
        writer = link.client_writer
        try:
            while True:
                data = await link.up_reader.read(CHUNK)
                if not data or link.closed:
                    break
                mode = link.mode
                if isinstance(mode, Blackhole):
                    continue
                if isinstance(mode, Delay) and mode.seconds > 0:
                    await asyncio.sleep(mode.seconds)
                    mode = link.mode
                if isinstance(mode, Cut):
                    left = mode.nbytes - link.cut_sent
                    if left <= len(data):
                        await self._send(link, data[:left])
                        link.close()
                        return
                    link.cut_sent += len(data)
                await self._send(link, data)
            if link.closed:
                return
            while isinstance(link.mode, Blackhole):  # never answer, never close
                link.changed.clear()
                await link.changed.wait()
            if link.closed:
                return
            mode = link.mode
            if isinstance(mode, SlowClose) and mode.seconds > 0:
                await asyncio.sleep(mode.seconds)
            if writer.can_write_eof():
                writer.write_eof()
            else:
                link.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            link.close()

    async def _send(self, link: _Link, data: bytes) -> None:
        if not data or link.closed:
            return
        link.client_writer.write(data)
        await link.client_writer.drain()
        self._counters.bytes_down += len(data)
