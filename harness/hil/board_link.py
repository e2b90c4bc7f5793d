"""The port under a board: the byte stream in, writes out, and reconnects when it drops.

:class:`BoardLink` owns everything that concerns the transport and nothing that
concerns the protocol: the pyserial object, the reader thread that holds the port
open the whole time, the frame decoder and its junk counters, writes, the DTR/RTS
pulse, and reopening the port with backoff after an error (USB re-enumeration, a
virtual port closed and reopened). The :class:`~harness.hil.bridge.SerialBoard`
above it gets decoded items and state changes through two callbacks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import serial

from harness.hil.board_errors import BoardState
from harness.hil.board_log import BoardLog
from harness.hil.frames import Frame, FrameDecoder, LogLine

READ_POLL_S = 0.05
# URL schemes whose transport carries no DTR/RTS (pyserial ignores them silently there).
NO_MODEM_LINES = ("socket://", "loop://", "spy://", "hwgrep://")

OpenPort = Callable[[str, int], serial.SerialBase]


def carries_modem_lines(port: str) -> bool:
    """Whether DTR/RTS reach the board over this port (device paths, ptys, rfc2217)."""
    return not port.startswith(NO_MODEM_LINES)


def open_pyserial(port: str, baudrate: int) -> serial.SerialBase:
    """Open without touching the board: DTR and RTS released before the port opens.

    pyserial asserts both on open by default, and through a dev board's auto-reset
    circuit the order they change in can pulse EN: merely opening the console would
    reboot the board (and a reconnect would reboot it again).
    """
    # pyserial's rfc2217 client refuses write_timeout (NotImplementedError); elsewhere it keeps
    # a wedged USB adapter from blocking the writer forever.
    write_timeout = None if port.startswith("rfc2217://") else 2.0
    ser = serial.serial_for_url(
        port, baudrate=baudrate, timeout=READ_POLL_S, write_timeout=write_timeout, do_not_open=True
    )
    ser.dtr = False
    ser.rts = False
    ser.open()
    return ser


class BoardLink:
    """One port held open by one reader thread, reopened with backoff until a window runs out.

    ``cond`` is the board's condition: the link swaps the port, bumps ``epoch``
    and ``reconnects`` and reports state changes (``on_state``, called with
    ``cond`` held) under it, so a waiting request sees them together.
    ``on_item`` gets every decoded frame and log line, on the reader thread.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        name: str,
        log: BoardLog,
        cond: threading.Condition,
        reconnect_window: float,
        on_item: Callable[[Frame | LogLine], None],
        on_state: Callable[[BoardState], None],
        open_port: OpenPort | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.reconnect_window = reconnect_window
        self.reconnects = 0
        self.epoch = 0  # bumps on every (re)connect
        self._name = name
        self._log = log
        self._cond = cond
        self._on_item = on_item
        self._on_state = on_state
        self._open_port = open_port or open_pyserial
        self._ser: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._retired_bad = 0
        self._retired_garbage = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._ser is not None

    @property
    def bad_frames(self) -> int:
        return self._retired_bad + self._decoder.bad_frames

    @property
    def garbage_bytes(self) -> int:
        return self._retired_garbage + self._decoder.garbage_bytes

    def open(self) -> None:
        """Open the port and start the reader; pyserial's error is left to the caller."""
        if self._thread is not None:
            return
        ser = self._open_port(self.port, self.baudrate)
        self._stop.clear()
        with self._cond:
            self._ser = ser
            self.epoch += 1
            self._on_state(BoardState.CONNECTED)
        self._thread = threading.Thread(target=self._read_loop, name=f"board-{self._name}")
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        """Stop the reader and close the port (the link can be opened again)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._cond:
            ser, self._ser = self._ser, None
            self._on_state(BoardState.CLOSED)
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()
        self._retire_decoder()

    def write(self, data: bytes, epoch: int | None) -> bool:
        """Write if the port is up (and still the connection ``epoch``); False if it is not."""
        with self._write_lock:
            ser = self._ser
            if ser is None or (epoch is not None and epoch != self.epoch):
                return False
            try:
                ser.write(data)
                ser.flush()
            except (serial.SerialException, OSError):
                return False
        self._log.write("tx", data.decode(errors="replace").rstrip("\n"))
        return True

    def pulse(self, download: bool) -> bool:
        """The classic ESP32 auto-reset on DTR/RTS; False if the port could not do it."""
        ser = self._ser
        if ser is None:
            return False
        try:
            with self._write_lock:
                ser.dtr = False  # IO0 high
                ser.rts = True  # EN low: chip held in reset
                time.sleep(0.1)
                if download:
                    ser.dtr = True  # IO0 low while EN rises: ROM loader
                ser.rts = False  # EN high: chip runs
                time.sleep(0.05)
                ser.dtr = False
        except (serial.SerialException, OSError):
            return False
        return True

    def _retire_decoder(self) -> None:
        self._retired_bad += self._decoder.bad_frames
        self._retired_garbage += self._decoder.garbage_bytes
        self._decoder = FrameDecoder()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            ser = self._ser
            if ser is None:
                if not self._reconnect():
                    return
                continue
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if self._stop.is_set():
                    return
                self._lost(exc)
                continue
            if data:
                for item in self._decoder.feed(data):
                    self._on_item(item)

    def _lost(self, exc: BaseException) -> None:
        self._log.write("port", f"lost: {exc}")
        with self._cond:
            ser, self._ser = self._ser, None
            self._on_state(BoardState.RECONNECTING)
            self._cond.notify_all()
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()
        # A line cut by the disconnect must not glue onto the first line after it.
        self._retire_decoder()

    def _reconnect(self) -> bool:
        deadline = time.monotonic() + self.reconnect_window
        delay = 0.05
        while not self._stop.is_set():
            try:
                ser = self._open_port(self.port, self.baudrate)
            except (serial.SerialException, OSError, ValueError):
                if time.monotonic() + delay > deadline:
                    with self._cond:
                        self._on_state(BoardState.GONE)
                        self._cond.notify_all()
                    self._log.write("port", f"gone after {self.reconnect_window:g} s")
                    return False
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            with self._cond:
                self._ser = ser
                self.epoch += 1
                self.reconnects += 1
                self._on_state(BoardState.CONNECTED)
                self._cond.notify_all()
            self._log.write("port", f"reconnected ({self.reconnects})")
            return True
        return False
