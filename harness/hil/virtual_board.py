"""A virtual ESP32 board: esptool flashes it for real; after reset it runs what it was flashed with.

Modes, as on a dev board:

* **download** (reset with IO0 low): the ROM's two banner lines (``rst:...,
  boot:0x3 (DOWNLOAD_BOOT...)``, ``waiting for download``; esptool reads them
  after its own reset to check the boot mode), then the ROM serial loader
  (``rom_loader``): SLIP frames only, nothing else on the line, so ``esptool
  --chip esp32 --no-stub`` can read the MAC, flash, read back and verify.
  FLASH_END (``esptool run``, ``--after soft-reset``) leaves it for the app.
* **run** (reset with IO0 high): the ROM banner, then the second-stage
  bootloader reads the app image at 0x10000 and validates it. A good image runs
  the claim-probe firmware of its version (``probe_app``); a bad one prints the
  bootloader's error and resets again, over and over (an error loop), with an
  ``image_error`` event frame each time so a bridge can say so.
* **halted**: EN held low (RTS asserted alone): nothing happens until released.

Transports (``listen``):

* ``socket://HOST:PORT`` (PORT 0 picks a free one): a raw TCP serial port.
  pyserial's socket:// carries no modem lines, so esptool cannot reset the
  board through it (use ``--before no-reset --after no-reset``). Resets come
  from the Python API (``reset()``), the ``reset``/``download`` frame commands
  in run mode, esptool's FLASH_END from the loader into the app, or, for the
  CLI, SIGUSR1 (reset into run) and SIGUSR2 (into download).
* ``rfc2217://HOST:PORT``: the same over RFC 2217 (pyserial's
  ``PortManager``), which *does* carry DTR and RTS. They drive a model of the
  dev-board auto-reset circuit (EN = not(RTS and not DTR), IO0 = not(DTR and
  not RTS)). IO0 counts as strapped low when it is low at any time in the
  300 ms after EN rises: a real board latches it after the EN RC delay
  (~10 ms), but RFC 2217 stretches every line change to a network round trip
  (measured ~50 ms each with pyserial's client), so esptool's ClassicReset
  pulls IO0 low ~50 ms after releasing EN and lets it go ~150 ms later. So
  esptool's own ``--before default-reset`` puts the board into download mode
  and ``--after hard-reset`` (IO0 high throughout) boots it, as on a dev board.
* ``pty``: a pseudo-terminal, reachable through a stable symlink (the URL) that
  is kept across unplug/replug, like a udev by-id link; output is lost while
  no program has it open, as on a USB serial port. Linux ptys have no
  modem lines (TIOCMGET/TIOCMSET/TIOCMBIS on a pty fail with ENOTTY, so pyserial
  and esptool cannot set DTR/RTS on one, and the master side cannot see them),
  so on a pty the DTR/RTS reset is not possible; resets come from the same
  API, frame commands and signals as for socket://. Use rfc2217 when the
  DTR/RTS sequence itself is under test.

``unplug()`` closes the port (clients see EOF/EIO, new connections are
refused, the pty link disappears) and ``replug()`` reopens it at the same URL
and power-cycles the board, as a USB re-enumeration does.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.hil.board_ports import POLL_S, close_socket, make_transport
from harness.hil.frames import Frame, FrameDecoder
from harness.hil.image import read_app_image
from harness.hil.probe_app import (
    ProbeApp,
    Signer,
    cohort_signing_table,
    default_signer,
    image_error_lines,
    rom_banner,
    signing_mode_for,
)
from harness.hil.rom_loader import Flash, RomLoader
from harness.hil.slip import SlipDecoder, slip_encode
from harness.protocol import mac_to_device_id

Mode = Literal["download", "run", "halted"]
APP_OFFSET = 0x10000
DEFAULT_MAC = "24:0a:c4:00:00:01"
FLASH_SIZES = {"1MB": 1 << 20, "2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
STRAP_WINDOW_S = 0.3
ERROR_LOOP_PERIOD_S = 0.5
BOOTLOADER_S = 0.28  # ROM + second-stage bootloader time before app_main's first log


def parse_mac(mac: str) -> bytes:
    return bytes.fromhex(mac_to_device_id(mac))


def parse_flash_size(size: str) -> int:
    key = size.strip().upper()
    if key not in FLASH_SIZES:
        raise HarnessInputError("flash_size", f"{size!r}: one of {', '.join(FLASH_SIZES)}")
    return FLASH_SIZES[key]


def _open_log(path: str | os.PathLike[str]) -> Any:
    try:
        return open(path, "ab")  # closed by stop(): lives as long as the board
    except OSError as exc:
        raise HarnessInputError("log_file", f"cannot open {path}: {exc.strerror}") from None


# -- the board ----------------------------------------------------------------------------


class VirtualBoard:
    """An ESP32 dev board on a serial port: ROM loader, flash, and the claim-probe firmware."""

    def __init__(
        self,
        mac: str = DEFAULT_MAC,
        flash_path: str | os.PathLike[str] | None = None,
        flash_size: int | str = "4MB",
        listen: str = "socket://127.0.0.1:0",
        boot: bool = False,
        fleet: str | os.PathLike[str] | None = None,
        network: bool = True,
        log_file: str | os.PathLike[str] | None = None,
        signer: Signer | None = None,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.mac = parse_mac(mac)
        size = parse_flash_size(flash_size) if isinstance(flash_size, str) else flash_size
        self.flash = Flash(size, os.fspath(flash_path) if flash_path else None)
        self.transport = make_transport(listen)
        self.network = network
        self.heartbeat_s = heartbeat_s
        self._signing_table = cohort_signing_table(fleet)
        self._signer = signer
        self._log = _open_log(log_file) if log_file else None
        self._rx: queue.Queue[bytes] = queue.Queue()
        self._next: Mode = "run" if boot else "download"
        self._reset_reason = "POWERON_RESET"
        self._reset = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._en = True
        self._io0 = True
        self._strap_timer: threading.Timer | None = None
        self._strap_low = False
        self._strap_open = False
        self.mode: Mode | Literal["error", "off"] = "off"
        self.boots = 0
        self.app: ProbeApp | None = None
        self.plugged = False

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def signer(self) -> Signer | None:
        """What does the crypto: the C signer core unless a test passed another."""
        return self._signer

    def start(self) -> VirtualBoard:
        if self._signer is None:
            self._signer = default_signer()
        self.transport.start(self._rx.put, self._lines_changed)
        self.plugged = True
        self._thread = threading.Thread(target=self._power_loop, name="vboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._reset.set()
        if self._strap_timer:
            self._strap_timer.cancel()
        if self._thread:
            self._thread.join(timeout=5)
        self.transport.close()
        self.plugged = False
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def reset(self, download: bool = False, reason: str = "POWERON_RESET") -> None:
        """Pulse EN with IO0 low (download) or high (run)."""
        self._request("download" if download else "run", reason)

    def unplug(self) -> None:
        """The USB cable pulled: the port goes away and the board loses power."""
        self.transport.unplug()
        self.plugged = False
        self._request("halted", "POWERON_RESET")
        self.wait_mode("off", timeout=2)

    def replug(self, download: bool = False) -> None:
        """Plugged back in: the port reappears at the same URL and the board powers up."""
        self.transport.replug()
        self.plugged = True
        self.reset(download=download)

    def _request(self, mode: Mode, reason: str) -> None:
        with self._state_lock:
            self._next = mode
            self._reset_reason = reason
            self._reset.set()

    def wait_mode(self, mode: str, timeout: float = 5.0) -> bool:
        """Until the board is in ``mode`` (tests and the CLI use it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mode == mode:
                return True
            time.sleep(0.01)
        return self.mode == mode

    # -- DTR/RTS through the auto-reset circuit ---------------------------------------

    def _lines_changed(self, dtr: bool, rts: bool) -> None:
        en = not (rts and not dtr)
        io0 = not (dtr and not rts)
        with self._state_lock:
            rising = en and not self._en
            falling = self._en and not en
            self._en, self._io0 = en, io0
            if rising:
                self._strap_low = not io0
                self._strap_open = True
            elif self._strap_open and not io0:
                self._strap_low = True
        if falling:
            with self._state_lock:
                self._strap_open = False
            if self._strap_timer:
                self._strap_timer.cancel()
            self._request("halted", "POWERON_RESET")
        elif rising:
            timer = threading.Timer(STRAP_WINDOW_S, self._strap_sample)
            timer.daemon = True
            self._strap_timer = timer
            timer.start()

    def _strap_sample(self) -> None:
        with self._state_lock:
            en, low = self._en, self._strap_low
            self._strap_open = False
        if en:
            self.reset(download=low)

    # -- the CPU ------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        self.transport.write(data)
        if self._log and self.mode != "download":
            self._log.write(data)
            self._log.flush()

    def _drain(self) -> None:
        while True:
            try:
                self._rx.get_nowait()
            except queue.Empty:
                return

    def _power_loop(self) -> None:
        while not self._stopped.is_set():
            with self._state_lock:
                mode, reason = self._next, self._reset_reason
                self._reset.clear()
            self._drain()  # the UART FIFO does not survive a reset
            self.boots += 1
            try:
                if mode == "download":
                    self._run_download(reason)
                elif mode == "run":
                    self._run_app(reason)
                else:
                    self.mode = "off"
                    self._reset.wait()
            except Exception as exc:  # a bug here must not kill the board silently
                self.mode = "off"
                self._emit(f"E (0) vboard: internal error {exc!r}\r\n".encode())
                self._reset.wait()

    def _pending(self) -> bytes | None:
        try:
            return self._rx.get(timeout=POLL_S)
        except queue.Empty:
            return None

    def _run_download(self, reason: str) -> None:
        self.mode = "download"
        # The ROM's banner comes before anyone talks to the loader; esptool reads
        # it after its reset to check the boot mode. Then only SLIP frames.
        for line in rom_banner(reason, download=True):
            self._emit(line)
        loader = RomLoader(self.mac, self.flash, on_run=self._leave_loader)
        slip = SlipDecoder()
        while not self._reset.is_set():
            data = self._pending()
            if data is None:
                continue
            for packet in slip.feed(data):
                replies = loader.handle(packet)
                if replies:
                    self.transport.write(b"".join(slip_encode(r) for r in replies))

    def _leave_loader(self, reboot: bool) -> None:
        # The reply to FLASH_END must go out before the reset drops the UART FIFO:
        # the request is queued and taken up after this packet's reply is written.
        self._request("run", "SW_RESET" if reboot else "POWERON_RESET")

    def _run_app(self, reason: str) -> None:
        self.mode = "run"
        t0 = time.monotonic()
        for line in rom_banner(reason, download=False):
            self._emit(line)
        image = read_app_image(self.flash.read(APP_OFFSET, self.flash.size - APP_OFFSET))
        if not image.valid:
            self._error_loop(image, t0)
            return
        version = image.version
        app = ProbeApp(
            self.mac,
            image,
            signing_mode_for(version, self._signing_table),
            self._signer,
            network=self.network,
            boot_time=t0 - BOOTLOADER_S,  # esp_log timestamps count from the ROM's start
            reset_reason=reason,
        )
        self.app = app
        for line in app.banner():
            self._emit(line)
        decoder = FrameDecoder()
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._reset.is_set():
            data = self._pending()
            if data is not None:
                for item in decoder.feed(data):
                    if isinstance(item, Frame):
                        for out in app.handle(item.payload):
                            self._emit(out)
                    elif item.text.strip():
                        self._emit(app.log("W", "claim_probe", "ignored non-frame input"))
                if app.reboot_to:
                    self._emit(b"\r\n")
                    self.reset(download=app.reboot_to == "download", reason="SW_RESET")
                    return
            if time.monotonic() >= next_beat:
                self._emit(app.heartbeat())
                next_beat += self.heartbeat_s

    def _error_loop(self, image: Any, t0: float) -> None:
        self.mode = "error"
        while not self._reset.is_set():
            for line in image_error_lines(int((time.monotonic() - t0) * 1000) + 40, image):
                self._emit(line)
            if self._reset.wait(ERROR_LOOP_PERIOD_S):
                return
            t0 = time.monotonic()
            for line in rom_banner("SW_RESET", download=False):
                self._emit(line)


class ControlServer:
    """A line-based TCP control port for a board running in another process.

    Commands (one per line): ``reset`` | ``reset download`` | ``unplug`` |
    ``replug`` | ``mode``. Each gets one line back: ``ok <mode>`` or
    ``error <reason>``. It is the out-of-band "hand on the board" (EN button,
    USB cable) for ports that carry no modem lines.
    """

    def __init__(self, board: VirtualBoard, host: str = "127.0.0.1", port: int = 0) -> None:
        self.board = board
        self._srv = socket.create_server((host, port))
        self.host, self.port = host, self._srv.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        close_socket(self._srv)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb", buffering=0) as f:
            for raw in f:
                reply = self.command(raw.decode("utf-8", errors="replace").strip())
                f.write(reply.encode() + b"\n")

    def command(self, line: str) -> str:
        """Run one control command; returns the reply line."""
        words = line.split()
        board = self.board
        if words == ["reset"] or words == ["reset", "run"]:
            board.reset(download=False)
            board.wait_mode("run", timeout=2) or board.wait_mode("error", timeout=1)
        elif words == ["reset", "download"]:
            board.reset(download=True)
            board.wait_mode("download", timeout=2)
        elif words == ["unplug"]:
            board.unplug()
        elif words == ["replug"]:
            board.replug()
        elif words != ["mode"]:
            return f"error unknown command {line!r}: reset [run|download], unplug, replug, mode"
        return f"ok {board.mode}{'' if board.plugged else ' unplugged'}"
