"""Bringing a bench up: start virtual boards, find ports, flash, reset, open bridges, read IDs.

``hil run``, ``hil compare`` and the pytest plugin all start from the same
state (every board running the declared image, its bridge open, its identity
read), so they share this one bring-up. Boards come up in parallel; a board
that fails (no port, boot loop, no answer) is kept with its error instead of
stopping the others, so a report can say which board failed and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.hil.bench import Bench, BoardSpec, normalize_mac, resolve_port, usb_ports
from harness.hil.board_errors import BoardError
from harness.hil.board_link import carries_modem_lines
from harness.hil.board_pool import BoardPool
from harness.hil.board_signer import BoardIdentity, BoardSigner
from harness.hil.bridge import SerialBoard
from harness.hil.flash import flash_board
from harness.hil.virtual_board import VirtualBoard
from harness.masking import mask_id

BOOT_TIMEOUT_S = 10.0
MAC_PROBE_TIMEOUT_S = 2.0


def default_virtual_mac(name: str) -> str:
    """A stable Espressif-OUI MAC for a virtual board that the bench gives none."""
    tail = hashlib.sha256(name.encode()).digest()[:3]
    return normalize_mac("24:0A:C4" + tail.hex())


@dataclass
class BenchBoard:
    """One bench board after bring-up: where it is, what it runs, and its bridge."""

    spec: BoardSpec
    port: str | None = None
    board: SerialBoard | None = None
    identity: BoardIdentity | None = None
    virtual: Any = None  # harness.hil.virtual_board.VirtualBoard for virtual = true
    flash: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ok(self) -> bool:
        return self.error is None and self.board is not None and self.identity is not None

    @property
    def signer(self) -> BoardSigner:
        assert self.board is not None and self.identity is not None, self.error
        return BoardSigner(self.board, self.identity)

    def summary(self) -> dict[str, Any]:
        """The report's row for this board: IDs masked, counters from the bridge."""
        row: dict[str, Any] = {
            "name": self.name,
            "locator": self.spec.locator,
            "port": self.port,
            "ok": self.ok,
            "error": self.error,
            "flash": dict(self.flash),
        }
        if self.identity is not None:
            row.update(
                device_id=mask_id(self.identity.device_id),
                mac=mask_id(self.identity.mac, keep=5),
                fw=self.identity.fw,
                project=self.identity.project,
                hmac_mode=self.identity.hmac_mode,
            )
        if self.board is not None:
            row.update(self.board.stats())
            if self.board.log.path is not None:
                row["log"] = str(self.board.log.path)
        return row


class BenchSession:
    """A bench brought up; a context manager that stops what it started."""

    def __init__(
        self,
        bench: Bench,
        log_dir: Path | str | None = None,
        *,
        flash: bool = True,
        boot_timeout: float = BOOT_TIMEOUT_S,
    ) -> None:
        self.bench = bench
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None and bench.log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hil-")
        self.log_dir = Path(log_dir or bench.log_dir or self._tmp.name)  # type: ignore[union-attr]
        self.do_flash = flash
        self.boot_timeout = boot_timeout
        self.boards = [BenchBoard(spec) for spec in bench.boards]

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> BenchSession:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Bring every board up in parallel; per-board failures land in ``BenchBoard.error``."""
        try:  # before any board is touched: a bad --log-dir is bad input, exit 2
            self.log_dir.mkdir(parents=True, exist_ok=True)
            probe = self.log_dir / f".harness-{os.getpid()}.probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = f"cannot write logs in {self.log_dir}: {exc.strerror or exc}"
            raise HarnessInputError("--log-dir", reason) from None
        self._locate()
        self._each(self._bring_up, [b for b in self.boards if b.error is None])

    def close(self) -> None:
        for entry in self.boards:
            if entry.board is not None:
                entry.board.close()
            if entry.virtual is not None:
                with contextlib.suppress(Exception):
                    entry.virtual.stop()
        if self._tmp is not None:
            # Logs in a temporary directory are only useful while the session lives.
            self._tmp.cleanup()
            self._tmp = None

    def __iter__(self) -> Iterator[BenchBoard]:
        return iter(self.boards)

    def ready(self) -> list[BenchBoard]:
        return [b for b in self.boards if b.ok]

    def board(self, name: str) -> BenchBoard:
        for entry in self.boards:
            if entry.name == name:
                return entry
        raise HarnessInputError("--board", f"no board named {name!r} in {self.bench.path}")

    def reset_boards(self, entries: list[BenchBoard] | None = None) -> None:
        """Reset boards into run mode and wait for each application (in parallel)."""
        targets = self.ready() if entries is None else entries

        def reset(entry: BenchBoard) -> None:
            assert entry.board is not None
            before = entry.board.boots
            self._reset_to_run(entry)
            entry.board.wait_ready(self.boot_timeout, since_boots=before)

        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            for entry, fut in [(e, pool.submit(reset, e)) for e in targets]:
                try:
                    fut.result()
                except BoardError as exc:
                    errors.append(f"{entry.name}: {exc}")
        if errors:
            raise BoardError("reset failed: " + "; ".join(errors))

    def pool(self) -> BoardPool:
        return BoardPool([b.board for b in self.ready() if b.board is not None])

    # -- steps -----------------------------------------------------------------------------

    def _locate(self) -> None:
        """Ports for boards found by path, serial number or USB location; start virtual ones."""
        listed: list[Any] | None = None
        for entry in self.boards:
            spec = entry.spec
            if spec.virtual:
                entry.virtual = self._start_virtual(spec)
                entry.port = str(entry.virtual.url)
            elif spec.port or spec.serial_number or spec.usb_location:
                if (spec.serial_number or spec.usb_location) and listed is None:
                    listed = usb_ports()
                entry.port = resolve_port(spec, self.bench, listed)
        for entry in self.boards:
            if entry.port is None and not entry.spec.virtual:
                entry.port = self._find_by_mac(entry, listed)

    def _start_virtual(self, spec: BoardSpec) -> Any:
        mac = spec.mac or default_virtual_mac(spec.name)
        flash_file = self.log_dir / f"{spec.name}.flash.bin"
        vb = VirtualBoard(mac=mac, flash_path=flash_file)
        vb.start()
        return vb

    def _find_by_mac(self, entry: BenchBoard, listed: list[Any] | None) -> str:
        """The unclaimed USB serial port whose board reports this MAC."""
        spec = entry.spec
        taken = {b.port for b in self.boards if b.port}
        ports = [p.device for p in (listed if listed is not None else usb_ports())]
        for port in ports:
            if port in taken:
                continue
            with (
                contextlib.suppress(BoardError),
                SerialBoard(port, timeout=MAC_PROBE_TIMEOUT_S) as sb,
            ):
                reply = sb.identity()
                if normalize_mac(str(reply.get("mac", ""))) == spec.mac:
                    return str(port)
        raise HarnessInputError(
            f"board[{self.bench.boards.index(spec)}].mac",
            f"no serial port answers with MAC {spec.mac} (tried: {', '.join(ports) or 'none'})",
            f"{self.bench.path}:{spec.line}",
        )

    def _bring_up(self, entry: BenchBoard) -> None:
        spec = entry.spec
        assert entry.port is not None
        if spec.image is not None and self.do_flash:
            entry.flash = self._flash(entry)
        board = SerialBoard(
            entry.port,
            name=spec.name,
            log_dir=self.log_dir,
            timeout=self.bench.timeout_s,
        )
        entry.board = board
        board.open()
        before = board.boots
        self._reset_to_run(entry)
        board.wait_ready(self.boot_timeout, since_boots=before)
        ident = BoardIdentity.from_reply(board.identity(), spec.name)
        if spec.mac is not None and normalize_mac(ident.mac) != spec.mac:
            raise BoardError(
                f"{spec.name}: board reports MAC {mask_id(ident.mac, 5)}, bench says "
                f"{mask_id(spec.mac, 5)}"
            )
        entry.identity = ident

    def _reset_to_run(self, entry: BenchBoard) -> None:
        assert entry.board is not None
        if entry.virtual is not None:
            entry.virtual.reset(download=False)
        else:
            entry.board.reset(download=False)

    def _flash(self, entry: BenchBoard) -> dict[str, Any]:
        """Flash the bench's image unless the board already runs it (ELF SHA-256)."""
        spec = entry.spec
        assert entry.port is not None and spec.image is not None
        if entry.virtual is not None:
            entry.virtual.reset(download=True)
            entry.virtual.wait_mode("download", timeout=5.0)
        # Without modem lines esptool cannot reset the board: we put it in download mode.
        lines = carries_modem_lines(entry.port) and entry.virtual is None
        result = flash_board(  # boards flash in parallel: each captures its own esptool output
            entry.port,
            spec.image,
            spec.offset,
            before="default-reset" if lines else "no-reset",
            after="hard-reset" if lines else "no-reset",
        )
        return {
            "image": spec.image.name,
            "version": result.image.version,
            "skipped": result.skipped,
            "seconds": round(result.seconds, 3),
        }

    def _each(self, step: Callable[[BenchBoard], None], entries: list[BenchBoard]) -> None:
        def run(entry: BenchBoard) -> None:
            try:
                step(entry)
            except (BoardError, HarnessInputError) as exc:
                entry.error = str(exc)
            except Exception as exc:  # esptool and friends: still this board's failure only
                entry.error = f"{entry.name}: {type(exc).__name__}: {exc}"

        if not entries:
            return
        with ThreadPoolExecutor(max_workers=len(entries)) as pool:
            list(pool.map(run, entries))
