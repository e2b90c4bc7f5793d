"""The serial bridge: one claim-probe board on any pyserial port, driven from threads.

A board is reached through a device path (``/dev/ttyUSB0``, ``/dev/pts/N``) or
any pyserial URL (``socket://``, ``rfc2217://``). One reader thread per board
holds the port open the whole time (console output is never lost because
nobody was reading), splits the byte stream into claim-probe frames and log
lines with :class:`~harness.hil.frames.FrameDecoder`, hands replies to the
waiting request by id and writes everything to a timestamped per-board log
with secrets scrubbed.

A port that errors (USB re-enumeration after a flash or a reset, a virtual port
closed and reopened) is reopened with backoff until ``reconnect_window`` runs
out; each success counts in ``reconnects``. Requests without side effects
(``ping``, ``identity``, ``sign``) are sent again after a reconnect or a reboot
of the board; a ``claim`` is not, since the board may have sent it.

Boot loops are recognised the way a person at the console would: repeated
``rst:`` lines from the ROM without a boot of the application, or the
firmware's ``image_error`` event, put the board in ``BoardState.IMAGE_ERROR``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import serial

from harness.hil.frames import Frame, FrameDecoder, LogLine, encode_frame
from harness.masking import scrub

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RECONNECT_WINDOW_S = 15.0
BOOT_LOOP_RESETS = 3  # ``rst:`` lines without an application boot in between
LOG_TAIL = 20
EXPECT_BUFFER = 5000  # log lines kept for expect()
PING_FALLBACK_S = 2.0  # after a reset, wait this long for a boot event before pinging
READ_POLL_S = 0.05
# Commands the bridge may send again after a reconnect or reboot: no side effect on the board.
IDEMPOTENT_COMMANDS = frozenset({"ping", "identity", "sign"})
# URL schemes whose transport carries no DTR/RTS (pyserial ignores them silently there).
NO_MODEM_LINES = ("socket://", "loop://", "spy://", "hwgrep://")


class BoardState(Enum):
    """Where a board is, as far as the bridge can tell."""

    CLOSED = "closed"
    CONNECTED = "connected"  # port open, application not (yet) seen
    RUNNING = "running"  # the application answered or announced its boot
    RECONNECTING = "reconnecting"
    IMAGE_ERROR = "image_error"  # boot loop or the firmware reported a bad image
    GONE = "gone"  # the port did not come back within the reconnect window


class BoardError(Exception):
    """A board failed to do what was asked; the message names the board."""


class BoardTimeout(BoardError):
    """No reply in time: says what was waited for and shows the last log lines."""

    def __init__(self, board: str, waited_for: str, timeout: float, tail: Sequence[str]) -> None:
        self.board = board
        self.waited_for = waited_for
        self.timeout = timeout
        self.tail = list(tail)
        last = " | ".join(self.tail[-5:]) or "<no log output>"
        super().__init__(f"{board}: no {waited_for} within {timeout:g} s; last log lines: {last}")


class BoardGone(BoardError):
    """The port vanished and did not come back within the reconnect window."""


class BoardImageError(BoardError):
    """The board is boot-looping or its firmware rejected the image."""


class BoardCommandError(BoardError):
    """The firmware answered ``ok: false``."""

    def __init__(self, board: str, cmd: str, error: str) -> None:
        self.cmd = cmd
        self.error = error
        super().__init__(f"{board}: {cmd} failed: {error}")


def carries_modem_lines(port: str) -> bool:
    """Whether DTR/RTS reach the board over this port (device paths, ptys, rfc2217)."""
    return not port.startswith(NO_MODEM_LINES)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Pending:
    cmd: str
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class BoardLog:
    """A timestamped per-board log file; every line passes through ``scrub`` first."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, text: str) -> None:
        if self._fh is None:
            return
        with self._lock:
            if self._fh is not None:
                self._fh.write(f"{_now()} {kind:<5} {scrub(text)}\n")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class SerialBoard:
    """One board on one port: open, reset, request/reply, events, reconnects, counters.

    ``name`` labels the board in errors and names its log file
    (``<log_dir>/<name>.log``). ``open_port`` defaults to
    ``serial.serial_for_url`` and is only there so a caller can pass options.
    """

    def __init__(
        self,
        port: str,
        *,
        name: str | None = None,
        baudrate: int = 115200,
        log_dir: Path | str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        reconnect_window: float = DEFAULT_RECONNECT_WINDOW_S,
        open_port: Callable[[str, int], serial.SerialBase] | None = None,
    ) -> None:
        self.port = port
        self.name = name or port
        self.baudrate = baudrate
        self.timeout = timeout
        self.reconnect_window = reconnect_window
        self._open_port = open_port or _open_pyserial
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        self.log = BoardLog(Path(log_dir) / f"{safe}.log" if log_dir is not None else None)
        self.state = BoardState.CLOSED
        self.reconnects = 0
        self.boots = 0
        self.image_error: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._lines: deque[tuple[int, str]] = deque(maxlen=EXPECT_BUFFER)
        self._line_seq = 0
        self._expect_from = 0
        self._ser: serial.SerialBase | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._epoch = 0  # bumps on every (re)connect
        self._resets_seen = 0  # ``rst:`` lines since the application last spoke
        self._decoder = FrameDecoder()
        self._retired_bad = 0
        self._retired_garbage = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> SerialBoard:
        """Open the port (an error here is the caller's: wrong path, nothing listening)."""
        if self._thread is not None:
            return self
        try:
            ser = self._open_port(self.port, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.log.close()
            raise BoardError(f"{self.name}: cannot open {self.port}: {exc}") from None
        self._stop.clear()
        with self._cond:
            self._ser = ser
            self._epoch += 1
            self._set_state(BoardState.CONNECTED)
        self._thread = threading.Thread(target=self._read_loop, name=f"board-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reader, close the port and the log; wakes every waiting request."""
        self.release()
        with self._cond:
            self._cond.notify_all()
        self.log.close()

    def release(self) -> None:
        """Close the port but keep the log open, e.g. while esptool owns the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._cond:
            ser, self._ser = self._ser, None
            self._set_state(BoardState.CLOSED)
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()
        self._retire_decoder()

    def __enter__(self) -> SerialBoard:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters --------------------------------------------------------------------------

    @property
    def bad_frames(self) -> int:
        return self._retired_bad + self._decoder.bad_frames

    @property
    def garbage_bytes(self) -> int:
        return self._retired_garbage + self._decoder.garbage_bytes

    def stats(self) -> dict[str, Any]:
        """The counters a report shows for this board."""
        return {
            "state": self.state.value,
            "reconnects": self.reconnects,
            "boots": self.boots,
            "bad_frames": self.bad_frames,
            "garbage_bytes": self.garbage_bytes,
            "image_error": self.image_error,
        }

    # -- requests --------------------------------------------------------------------------

    def request(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its reply; ``ok: false`` raises BoardCommandError."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        rid = next(self._ids)
        pending = _Pending(cmd)
        line = encode_frame({"id": rid, "cmd": cmd, **args})
        resend = cmd in IDEMPOTENT_COMMANDS
        with self._cond:
            self._pending[rid] = pending
        try:
            # A request is lost when the port reconnects or the board reboots (the UART
            # FIFO does not survive a reset): both change this marker.
            sent: tuple[int, int] | None = None
            while not pending.event.is_set():
                self._raise_if_dead(cmd)
                marker = (self._epoch, self.boots)
                if marker != sent and self._ser is not None:
                    if sent is not None and not resend:
                        raise BoardError(
                            f"{self.name}: port reconnected or board rebooted while waiting "
                            f"for {cmd!r}; not sent again (it may have taken effect)"
                        )
                    if self._write(line, marker[0]):
                        sent = marker
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BoardTimeout(self.name, f"reply to {cmd!r} (id {rid})", limit, self.tail)
                with self._cond:
                    if not pending.event.is_set():
                        self._cond.wait(min(remaining, 0.1))
        finally:
            with self._cond:
                self._pending.pop(rid, None)
        reply = pending.reply or {}
        if not reply.get("ok", False):
            raise BoardCommandError(self.name, cmd, str(reply.get("error", "no reason given")))
        return reply

    def send(self, cmd: str, **args: Any) -> None:
        """Send a command without waiting for a reply (``reset``, ``download``)."""
        if not self._write(encode_frame({"id": next(self._ids), "cmd": cmd, **args}), None):
            raise BoardError(f"{self.name}: port not open; cannot send {cmd!r}")

    def ping(self, timeout: float | None = None) -> bool:
        try:
            self.request("ping", timeout=timeout)
        except BoardTimeout:
            return False
        return True

    def identity(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request("identity", timeout=timeout)

    def expect(self, pattern: str | re.Pattern[str], timeout: float | None = None) -> re.Match[str]:
        """Wait for a log line matching ``pattern``, searching after the previous match.

        Like pytest-embedded's ``expect``: each call consumes the lines up to its
        match, so consecutive calls follow the console in order. Lines from before
        the first call count (up to the last 5000), so nothing printed between
        two calls is lost. Times out with BoardTimeout naming the pattern.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                for seq, text in self._lines:
                    if seq >= self._expect_from:
                        match = regex.search(text)
                        if match:
                            self._expect_from = seq + 1
                            return match
                if self._lines:
                    self._expect_from = max(self._expect_from, self._lines[-1][0] + 1)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    waited = f"log line matching {regex.pattern!r}"
                    raise BoardTimeout(self.name, waited, limit, self.tail)
                self._cond.wait(min(remaining, 0.1))

    # -- reset and boot --------------------------------------------------------------------

    def reset(self, download: bool = False) -> None:
        """Reset into run mode (or the ROM loader) the way a dev board's auto-reset does.

        Over a port with modem lines this is the classic ESP32 sequence (DTR drives
        IO0, RTS drives EN, both inverted by the auto-reset transistors). Over
        ``socket://`` nothing carries DTR/RTS, so the firmware's ``reset`` /
        ``download`` command asks the board to reset itself.
        """
        with self._cond:
            self._resets_seen = 0
            if self.state is BoardState.IMAGE_ERROR:
                self.image_error = None
                self._set_state(BoardState.CONNECTED)
        self.log.write("reset", "download mode" if download else "run mode")
        if carries_modem_lines(self.port) and self._pulse(download):
            return
        self.send("download" if download else "reset")

    def _pulse(self, download: bool) -> bool:
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

    def wait_ready(self, timeout: float | None = None, since_boots: int | None = None) -> None:
        """Wait until the application runs.

        With ``since_boots`` (the boot count before a reset), only a boot announced
        after it counts: a ping could still be answered by the application that is
        about to be reset. Firmware that never announces its boot is accepted by a
        ping reply once ``PING_FALLBACK_S`` has passed. Without ``since_boots``, a
        ping reply is enough. Raises BoardImageError as soon as the board is seen
        boot-looping, and BoardTimeout (with the last log lines) if nothing comes.
        """
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        deadline = start + limit
        while True:
            self._raise_if_dead("boot")
            if since_boots is not None and self.boots > since_boots:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoardTimeout(self.name, "application boot", limit, self.tail)
            if since_boots is not None and time.monotonic() - start < PING_FALLBACK_S:
                with self._cond:
                    self._cond.wait(min(remaining, 0.05))
                continue
            try:
                self.request("ping", timeout=min(0.5, remaining))
                return
            except BoardTimeout:
                continue
            except BoardError as exc:
                if self.state is BoardState.IMAGE_ERROR:
                    raise BoardImageError(f"{self.name}: {self.image_error}") from exc
                raise

    def reset_and_wait(self, timeout: float | None = None) -> None:
        """Reset into run mode and wait for the application."""
        before = self.boots
        self.reset(download=False)
        self.wait_ready(timeout, since_boots=before)

    # -- internals -------------------------------------------------------------------------

    def _raise_if_dead(self, what: str) -> None:
        if self.state is BoardState.IMAGE_ERROR:
            raise BoardImageError(f"{self.name}: {self.image_error} (while waiting for {what})")
        if self.state is BoardState.GONE:
            raise BoardGone(
                f"{self.name}: port {self.port} did not come back within "
                f"{self.reconnect_window:g} s (while waiting for {what})"
            )
        if self.state is BoardState.CLOSED:
            raise BoardError(f"{self.name}: port closed (while waiting for {what})")

    def _write(self, data: bytes, epoch: int | None) -> bool:
        """Write if the port is up (and still the connection ``epoch``); False if it is not."""
        with self._write_lock:
            ser = self._ser
            if ser is None or (epoch is not None and epoch != self._epoch):
                return False
            try:
                ser.write(data)
                ser.flush()
            except (serial.SerialException, OSError):
                return False
        self.log.write("tx", data.decode(errors="replace").rstrip("\n"))
        return True

    def _set_state(self, state: BoardState) -> None:
        if state is not self.state:
            self.state = state
            self.log.write("state", state.value)

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
                    self._handle(item)

    def _lost(self, exc: BaseException) -> None:
        self.log.write("port", f"lost: {exc}")
        with self._cond:
            ser, self._ser = self._ser, None
            self._set_state(BoardState.RECONNECTING)
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
                        self._set_state(BoardState.GONE)
                        self._cond.notify_all()
                    self.log.write("port", f"gone after {self.reconnect_window:g} s")
                    return False
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            with self._cond:
                self._ser = ser
                self._epoch += 1
                self.reconnects += 1
                self._set_state(BoardState.CONNECTED)
                self._cond.notify_all()
            self.log.write("port", f"reconnected ({self.reconnects})")
            return True
        return False

    def _handle(self, item: Frame | LogLine) -> None:
        if isinstance(item, LogLine):
            self._on_log(item.text)
            return
        payload = item.payload
        self.log.write("rx", json.dumps(payload, separators=(",", ":"), sort_keys=True))
        with self._cond:
            rid = payload.get("id")
            if "event" in payload:
                self._on_event(payload)
            elif isinstance(rid, int) and rid in self._pending:
                self._resets_seen = 0
                if self.state is BoardState.CONNECTED:
                    self._set_state(BoardState.RUNNING)
                pending = self._pending[rid]
                pending.reply = payload
                pending.event.set()
            self._cond.notify_all()

    def _on_log(self, text: str) -> None:
        self.tail.append(scrub(text))
        self.log.write("log", text)
        with self._cond:
            self._lines.append((self._line_seq, text))
            self._line_seq += 1
            self._cond.notify_all()
        if text.startswith("rst:"):
            with self._cond:
                self._resets_seen += 1
                if self._resets_seen >= BOOT_LOOP_RESETS and self.state is not BoardState.GONE:
                    self.image_error = (
                        f"boot loop: {self._resets_seen} resets without the application starting"
                    )
                    self._set_state(BoardState.IMAGE_ERROR)
                    self._cond.notify_all()

    def _on_event(self, payload: dict[str, Any]) -> None:
        self.events.append(payload)
        kind = payload.get("event")
        if kind == "boot":
            self.boots += 1
            self._resets_seen = 0
            self.image_error = None
            self._set_state(BoardState.RUNNING)
        elif kind == "image_error":
            reason = payload.get("error") or payload.get("reason") or "invalid image"
            self.image_error = f"image error: {reason}"
            self._set_state(BoardState.IMAGE_ERROR)


def _open_pyserial(port: str, baudrate: int) -> serial.SerialBase:
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


T = TypeVar("T")


@dataclass(slots=True)
class BoardOutcome(Generic[T]):
    """What one board's job returned, or the error it raised."""

    board: SerialBoard
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BoardPool:
    """Many boards at once: one reader thread each, jobs run on one worker thread per board."""

    def __init__(self, boards: Sequence[SerialBoard]) -> None:
        self.boards = list(boards)

    def __iter__(self) -> Iterator[SerialBoard]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def open(self) -> BoardPool:
        opened: list[SerialBoard] = []
        try:
            for board in self.boards:
                opened.append(board.open())
        except BaseException:
            for board in opened:
                board.close()
            raise
        return self

    def close(self) -> None:
        for board in self.boards:
            board.close()

    def __enter__(self) -> BoardPool:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, job: Callable[[SerialBoard], T]) -> list[BoardOutcome[T]]:
        """Run ``job`` on every board in parallel; one board's failure does not stop the rest."""

        def run(board: SerialBoard) -> BoardOutcome[T]:
            try:
                return BoardOutcome(board, value=job(board))
            except Exception as exc:
                return BoardOutcome(board, error=exc)

        if not self.boards:
            return []
        with ThreadPoolExecutor(max_workers=len(self.boards)) as pool:
            return list(pool.map(run, self.boards))
