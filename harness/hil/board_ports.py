"""Serial ports for the virtual board: raw TCP (socket://), RFC 2217 with DTR/RTS, and ptys.

Each transport hands received bytes to ``on_data`` and, where the port carries
modem lines (RFC 2217), their changes to ``on_lines(dtr, rts)``; ``write``
drops output while nobody holds the port open, as a USB serial port does.
``unplug``/``replug`` close and reopen the port at the same URL. Why ptys
cannot carry DTR/RTS is in ``harness.hil.virtual_board``'s docstring.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import tempfile
import threading
import tty
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from harness.errors import HarnessInputError

POLL_S = 0.05

OnData = Callable[[bytes], None]
OnLines = Callable[[bool, bool], None]


class _TcpTransport:
    """One client at a time on a TCP port; a newer client replaces an older one."""

    scheme = "socket"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._on_data: OnData = lambda _b: None
        self._on_lines: OnLines = lambda _d, _r: None
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, on_data: OnData, on_lines: OnLines) -> None:
        self._on_data, self._on_lines = on_data, on_lines
        self._listen()

    def _listen(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((self.host, self.port))
        except OSError as exc:
            srv.close()
            raise HarnessInputError(
                "listen", f"cannot listen on {self.url}: {exc.strerror}"
            ) from None
        srv.listen(4)
        self.port = srv.getsockname()[1]
        self._server = srv
        self._closed.clear()
        threading.Thread(target=self._accept_loop, args=(srv,), daemon=True).start()

    def _accept_loop(self, srv: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                old, self._conn = self._conn, conn
            if old is not None:
                close_socket(old)
            self._connected(conn)
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True).start()

    def _connected(self, conn: socket.socket) -> None:
        """Hook for protocols that negotiate on connect."""

    def _read_loop(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            plain = self._filter(data)
            if plain:
                self._on_data(plain)
        with self._lock:
            if self._conn is conn:
                self._conn = None
                self._disconnected()
        close_socket(conn)

    def _disconnected(self) -> None:
        """Hook: the client went away."""

    def _filter(self, data: bytes) -> bytes:
        return data

    def _escape(self, data: bytes) -> bytes:
        return data

    def write(self, data: bytes) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                return  # nobody holds the port open: output is lost, as on a real UART
            try:
                conn.sendall(self._escape(data))
            except OSError:
                self._conn = None
                close_socket(conn)

    def unplug(self) -> None:
        self._closed.set()
        with self._lock:
            srv, self._server = self._server, None
            conn, self._conn = self._conn, None
        if srv is not None:
            close_socket(srv)
        if conn is not None:
            close_socket(conn)

    def replug(self) -> None:
        self._listen()

    def close(self) -> None:
        self.unplug()


def close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _ModemLines:
    """The board side of the USB-UART bridge, as pyserial's rfc2217 PortManager sees it."""

    def __init__(self, on_change: OnLines) -> None:
        self._on_change = on_change
        self._dtr = False
        self._rts = False
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False
        self.name = "virtual-esp32"

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._on_change(self._dtr, self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._on_change(self._dtr, self._rts)

    def release(self) -> None:
        """Port closed: the adapter de-asserts both lines."""
        self._dtr = self._rts = False
        self._on_change(False, False)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class _Rfc2217Transport(_TcpTransport):
    """TCP with RFC 2217 negotiation: carries baud rate, DTR and RTS."""

    scheme = "rfc2217"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._manager: Any = None
        self._lines: _ModemLines | None = None

    def _connected(self, conn: socket.socket) -> None:
        from serial.rfc2217 import PortManager

        lines = _ModemLines(self._on_lines)
        self._lines = lines
        self._manager = PortManager(lines, _SocketWriter(conn))

    def _filter(self, data: bytes) -> bytes:
        manager = self._manager
        return b"".join(manager.filter(data)) if manager is not None else data

    def _escape(self, data: bytes) -> bytes:
        manager = self._manager
        return b"".join(manager.escape(data)) if manager is not None else data

    def _disconnected(self) -> None:
        if self._lines is not None:
            self._lines.release()


class _SocketWriter:
    """What PortManager writes its negotiation replies through."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._conn.sendall(data)


class _PtyTransport:
    """A pseudo-terminal behind a stable symlink; no modem lines (see the module docstring).

    Like a USB serial port, output is lost while no program holds the port
    open: the board does not keep the pty's slave side open itself, and tells
    a client is there by the master's read result (EIO with no slave open,
    EAGAIN or data with one), checked by the reader and before each write.
    """

    def __init__(self, link: str | None = None) -> None:
        self._dir: str | None = None
        if link is None:
            self._dir = tempfile.mkdtemp(prefix="vboard-")
            link = os.path.join(self._dir, "ttyESP32")
        self.link = link
        self._master: int | None = None
        self._on_data: OnData = lambda _b: None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = False  # a program has the port open

    @property
    def url(self) -> str:
        return self.link

    def start(self, on_data: OnData, on_lines: OnLines) -> None:
        self._on_data = on_data
        self._open()

    def _open(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        os.close(slave)  # the node stays while the master is open; clients reopen it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link)
        os.symlink(name, self.link)
        stop = threading.Event()
        self._master, self._stop, self.client = master, stop, False
        threading.Thread(target=self._read_loop, args=(master, stop), daemon=True).start()

    def _read_loop(self, master: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                select.select([master], [], [], POLL_S)
            except (OSError, ValueError):
                return
            with self._lock:
                if self._master != master:
                    return  # unplugged
                self.client = self._poll(master)
            if not self.client:
                stop.wait(POLL_S)  # hung up: select would return at once

    def _poll(self, master: int) -> bool:
        """Read what is there (under the lock); False when nobody has the slave open."""
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return True
        except OSError:
            return False  # EIO: no slave side open
        if data:
            self._on_data(data)
        return True

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._master is None:
                return
            if not self.client:
                self.client = self._poll(self._master)  # opened since the last poll?
            if not self.client:
                return  # nobody listening: lost, as on a USB port nobody holds open
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._master, data)  # a full buffer drops output, like a UART FIFO

    def unplug(self) -> None:
        self._stop.set()
        with self._lock:
            master, self._master = self._master, None
            self.client = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link)
        if master is not None:
            with contextlib.suppress(OSError):
                os.close(master)

    def replug(self) -> None:
        self._open()

    def close(self) -> None:
        self.unplug()
        if self._dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._dir)


Transport = _TcpTransport | _PtyTransport


def make_transport(listen: str) -> Transport:
    """``socket://HOST:PORT``, ``rfc2217://HOST:PORT`` or ``pty`` / ``pty:/path/link``."""
    if listen == "pty" or listen.startswith("pty:"):
        link = listen[4:] or None
        return _PtyTransport(link)
    parts = urlsplit(listen)
    if parts.scheme not in ("socket", "rfc2217") or not parts.hostname:
        raise HarnessInputError(
            "listen", f"{listen!r}: use socket://HOST:PORT, rfc2217://HOST:PORT or pty"
        )
    try:
        port = parts.port or 0
    except ValueError:
        raise HarnessInputError("listen", f"{listen!r}: bad port") from None
    cls = _Rfc2217Transport if parts.scheme == "rfc2217" else _TcpTransport
    return cls(parts.hostname, port)
