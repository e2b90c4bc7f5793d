"""``harness hil flash`` and ``harness hil virtual-board``: thin click layers.

The ``hil`` group (``harness.cli.hil``) adds these two commands; the work is
in ``harness.hil.flash.flash_board`` and ``harness.hil.virtual_board.VirtualBoard``.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from harness.hil.board_link import carries_modem_lines
from harness.hil.flash import AFTER_CHOICES, BEFORE_CHOICES, FlashError, flash_board


@click.command("flash")
@click.option(
    "--port", "-p", required=True, help="Serial port or pyserial URL (socket://, rfc2217://)."
)
@click.option(
    "--image", "image", required=True, type=click.Path(path_type=Path), help="App image (.bin)."
)
@click.option("--offset", default="0x10000", show_default=True, help="Flash offset of the app.")
@click.option("--baud", "-b", default=115200, show_default=True, type=int)
@click.option(
    "--stub/--no-stub",
    default=False,
    show_default=True,
    help="Upload esptool's flasher stub (faster on real boards; virtual boards need --no-stub).",
)
@click.option(
    "--before",
    type=click.Choice(BEFORE_CHOICES),
    help="Reset before connecting [default: no-reset on socket://, else default-reset].",
)
@click.option(
    "--after",
    type=click.Choice(AFTER_CHOICES),
    help="Reset after flashing [default: no-reset on socket://, else hard-reset].",
)
@click.option("--force", is_flag=True, help="Flash even if the board already runs this image.")
@click.option("--no-compress", is_flag=True, help="Plain write-flash instead of -z.")
@click.option("--verbose", "-v", is_flag=True, help="Show esptool's own output.")
def flash(
    port: str,
    image: Path,
    offset: str,
    baud: int,
    stub: bool,
    before: str | None,
    after: str | None,
    force: bool,
    no_compress: bool,
    verbose: bool,
) -> None:
    """Flash an app image, skipping boards that already run it (same ELF SHA-256).

    The image is checked first (checksum and SHA-256 digest); a bad image or an
    unreachable port is one line and exit 2, an esptool failure exit 1.
    """
    lines = carries_modem_lines(port)  # raw TCP (socket://) carries no DTR/RTS
    try:
        result = flash_board(
            port,
            image,
            offset,
            baud=baud,
            stub=stub,
            force=force,
            before=before or ("default-reset" if lines else "no-reset"),
            after=after or ("hard-reset" if lines else "no-reset"),
            compress=not no_compress,
        )
    except FlashError as exc:
        raise click.ClickException(str(exc)) from None
    if verbose:
        click.echo(result.esptool_log, err=True)
    click.echo(result.summary())


@click.command("virtual-board")
@click.option("--mac", default="24:0a:c4:00:00:01", show_default=True, help="Wi-Fi MAC (eFuse).")
@click.option(
    "--flash",
    "flash_file",
    type=click.Path(path_type=Path),
    help="Keep the flash in this file (created blank if missing); default: in memory.",
)
@click.option("--flash-size", default="4MB", show_default=True)
@click.option(
    "--listen",
    default="socket://127.0.0.1:0",
    show_default=True,
    help="socket://HOST:PORT, rfc2217://HOST:PORT (DTR/RTS reset works) or pty.",
)
@click.option("--boot", is_flag=True, help="Start in run mode instead of the ROM loader.")
@click.option("--fleet", type=click.Path(path_type=Path), help="Fleet file with the cohort table.")
@click.option("--network/--no-network", default=True, show_default=True, help="Wi-Fi for claims.")
@click.option("--log-file", type=click.Path(path_type=Path), help="Append the board's output here.")
@click.option(
    "--control",
    is_flag=True,
    help="Also open a TCP control port (reset/unplug/replug); its URL is stdout's second line.",
)
def virtual_board(
    mac: str,
    flash_file: Path | None,
    flash_size: str,
    listen: str,
    boot: bool,
    fleet: Path | None,
    network: bool,
    log_file: Path | None,
    control: bool,
) -> None:
    """Serve a virtual ESP32 that esptool flashes and that runs the claim probe.

    The first line on stdout is the pyserial URL to use (with --control, the
    second is the control port: send "reset", "reset download", "unplug",
    "replug" or "mode", one per line). SIGUSR1 resets the board into run
    mode, SIGUSR2 into the ROM loader; SIGINT/SIGTERM stop it.
    """
    from harness.hil.virtual_board import ControlServer, VirtualBoard

    board = VirtualBoard(
        mac=mac,
        flash_path=flash_file,
        flash_size=flash_size,
        listen=listen,
        boot=boot,
        fleet=fleet,
        network=network,
        log_file=log_file,
    ).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGUSR1:
            board.reset(download=False)
        elif signum == signal.SIGUSR2:
            board.reset(download=True)
        else:
            done.set()

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    ctl = ControlServer(board).start() if control else None
    sys.stdout.write(board.url + "\n" + (ctl.url + "\n" if ctl else ""))
    sys.stdout.flush()
    click.echo(
        f"virtual ESP32 {mac} on {board.url} ({'run' if boot else 'download'} mode);"
        " SIGUSR1 = reset to run, SIGUSR2 = reset to download",
        err=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        if ctl:
            ctl.stop()
        board.stop()
