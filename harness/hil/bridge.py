"""The serial bridge: one claim-probe board on any pyserial port, driven from threads.

A board is reached through a device path (``/dev/ttyUSB0``, ``/dev/pts/N``) or
any pyserial URL (``socket://``, ``rfc2217://``). Its
:class:`~harness.hil.board_link.BoardLink` holds the port open the whole time
(console output is never lost because nobody was reading), splits the byte
stream into claim-probe frames and log lines and reopens the port with backoff
when it errors (USB re-enumeration after a flash or a reset, a virtual port
closed and reopened) until ``reconnect_window`` runs out; each success counts
in ``reconnects``. :class:`SerialBoard` is the protocol on top: it hands
replies to the waiting request by id, tracks events and state, keeps the
console for ``expect`` (:class:`~harness.hil.board_console.BoardConsole`) and
writes everything to a timestamped per-board log with secrets scrubbed.

Requests without side effects (``ping``, ``identity``, ``sign``) are sent again
after a reconnect or a reboot of the board; a ``claim`` is not, since the board
may have sent it.

Boot loops are recognised the way a person at the console would: repeated
``rst:`` lines from the ROM without a boot of the application, or the
firmware's ``image_error`` event, put the board in ``BoardState.IMAGE_ERROR``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial

from harness.hil.board_console import BoardConsole
from harness.hil.board_errors import (
    BoardCommandError,
    BoardError,
    BoardGone,
    BoardImageError,
    BoardState,
    BoardTimeout,
)
from harness.hil.board_link import BoardLink, OpenPort, carries_modem_lines
from harness.hil.board_log import BoardLog
from harness.hil.frames import Frame, LogLine, encode_frame

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RECONNECT_WINDOW_S = 15.0
BOOT_LOOP_RESETS = 3  # ``rst:`` lines without an application boot in between
PING_FALLBACK_S = 2.0  # after a reset, wait this long for a boot event before pinging
# Commands the bridge may send again after a reconnect or reboot: no side effect on the board.
IDEMPOTENT_COMMANDS = frozenset({"ping", "identity", "sign"})


@dataclass(slots=True)
class _Pending:
    cmd: str
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


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
        open_port: OpenPort | None = None,
    ) -> None:
        self.port = port
        self.name = name or port
        self.baudrate = baudrate
        self.timeout = timeout
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        self.log = BoardLog(Path(log_dir) / f"{safe}.log" if log_dir is not None else None)
        self.state = BoardState.CLOSED
        self.boots = 0
        self.image_error: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self._cond = threading.Condition()
        self._console = BoardConsole(self.name, self._cond, self.log)
        self.tail = self._console.tail  # the last log lines, scrubbed, for error messages
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._resets_seen = 0  # ``rst:`` lines since the application last spoke
        self._link = BoardLink(
            port,
            baudrate,
            name=self.name,
            log=self.log,
            cond=self._cond,
            reconnect_window=reconnect_window,
            on_item=self._handle,
            on_state=self._set_state,
            open_port=open_port,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> SerialBoard:
        """Open the port (an error here is the caller's: wrong path, nothing listening)."""
        try:
            self._link.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            self.log.close()
            raise BoardError(f"{self.name}: cannot open {self.port}: {exc}") from None
        return self

    def close(self) -> None:
        """Stop the reader, close the port and the log; wakes every waiting request."""
        self.release()
        with self._cond:
            self._cond.notify_all()
        self.log.close()

    def release(self) -> None:
        """Close the port but keep the log open, e.g. while esptool owns the port."""
        self._link.close()

    def __enter__(self) -> SerialBoard:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters --------------------------------------------------------------------------

    @property
    def reconnect_window(self) -> float:
        return self._link.reconnect_window

    @property
    def reconnects(self) -> int:
        return self._link.reconnects

    @property
    def bad_frames(self) -> int:
        return self._link.bad_frames

    @property
    def garbage_bytes(self) -> int:
        return self._link.garbage_bytes

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
                marker = (self._link.epoch, self.boots)
                if marker != sent and self._link.connected:
                    if sent is not None and not resend:
                        raise BoardError(
                            f"{self.name}: port reconnected or board rebooted while waiting "
                            f"for {cmd!r}; not sent again (it may have taken effect)"
                        )
                    if self._link.write(line, marker[0]):
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
        if not self._link.write(encode_frame({"id": next(self._ids), "cmd": cmd, **args}), None):
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
        return self._console.expect(regex, self.timeout if timeout is None else timeout)

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
        if carries_modem_lines(self.port) and self._link.pulse(download):
            return
        self.send("download" if download else "reset")

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

    def _set_state(self, state: BoardState) -> None:
        if state is not self.state:
            self.state = state
            self.log.write("state", state.value)

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
        self._console.add(text)
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
