"""esptool, for real, against the virtual board; then the firmware it was flashed with.

Every step goes through a real transport (TCP socket, RFC 2217, pty) and the
real esptool process; the only stand-in is the board itself.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from firmware_fixtures.images import ImageSpec, build_image, corrupt_image, fixture_path
from harness.errors import HarnessInputError
from harness.hil.frames import Frame, FrameDecoder, LogLine, encode_frame
from harness.hil.probe_app import builtin_signing_mode, cohort_signing_table
from harness.hil.virtual_board import APP_OFFSET, VirtualBoard
from harness.protocol import ClaimRequest, derive_oob_v5, sign_claim, verify_claim_hmac
from tests.support import HARNESS, ROOT

MAC = "CC:DB:A7:95:BA:A4"
DEVICE_ID = "CCDBA795BAA4"
OOB = bytes.fromhex(derive_oob_v5(DEVICE_ID))
NONCE = "00112233445566778899aabbccddeeff"
VIRTUAL = ["--before", "no-reset", "--after", "no-reset", "--no-stub"]


def esptool(port: str, *args: str, reset: list[str] = VIRTUAL) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", port, *reset, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


class Console:
    """A serial client that splits frames from log lines (what a bridge does, minimally)."""

    def __init__(self, url: str) -> None:
        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0.05)
        self.decoder = FrameDecoder()
        self.frames: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self._next_id = 0

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._take(self.port.read(4096))

    def _take(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, Frame):
                self.frames.append(item.payload)
            elif isinstance(item, LogLine):
                self.logs.append(item.text)

    def wait_frame(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, f in enumerate(self.frames):
                if pred(f):
                    return self.frames.pop(i)
            self._take(self.port.read(4096))
        raise AssertionError(f"no such frame within {timeout}s; logs: {self.logs[-5:]}")

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        rid = self._next_id
        self.port.write(encode_frame({"id": rid, "cmd": cmd, **fields}))
        return self.wait_frame(lambda f: f.get("id") == rid)

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def board() -> Iterator[VirtualBoard]:
    with VirtualBoard(mac=MAC, heartbeat_s=0.2) as b:
        yield b


def boot(board: VirtualBoard) -> Console:
    """Reset into run mode with a console attached, and wait for the boot event."""
    console = Console(board.url)
    time.sleep(0.1)  # let the board see the connection before it prints
    board.reset(download=False)
    console.wait_frame(lambda f: f.get("event") in ("boot", "image_error"), timeout=10)
    return console


def test_esptool_reads_chip_facts(board: VirtualBoard) -> None:
    mac = esptool(board.url, "read-mac")
    assert mac.returncode == 0, mac.stdout + mac.stderr
    assert "MAC:                cc:db:a7:95:ba:a4" in mac.stdout
    assert "ESP32-D0WD-V3 (revision v3.0)" in mac.stdout
    chip = esptool(board.url, "chip-id")
    assert chip.returncode == 0 and "cc:db:a7:95:ba:a4" in chip.stdout
    flash = esptool(board.url, "flash-id")
    assert flash.returncode == 0, flash.stdout + flash.stderr
    assert "Manufacturer: ef" in flash.stdout and "Device: 4016" in flash.stdout
    assert "Detected flash size: 4MB" in flash.stdout
    assert board.mode == "download"  # esptool never reset it


def test_write_read_verify_plain_and_compressed(board: VirtualBoard, tmp_path: Path) -> None:
    old, new = fixture_path("5.0.3"), fixture_path("5.1.0")
    plain = esptool(board.url, "write-flash", hex(APP_OFFSET), str(old))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert board.flash.read(APP_OFFSET, old.stat().st_size) == old.read_bytes()
    back = tmp_path / "back.bin"
    read = esptool(board.url, "read-flash", hex(APP_OFFSET), str(old.stat().st_size), str(back))
    assert read.returncode == 0, read.stdout + read.stderr
    assert back.read_bytes() == old.read_bytes()

    z = esptool(board.url, "write-flash", "-z", hex(APP_OFFSET), str(new))
    assert z.returncode == 0 and "compressed" in z.stdout, z.stdout + z.stderr
    assert esptool(board.url, "verify-flash", hex(APP_OFFSET), str(new)).returncode == 0
    # verify-flash is a real comparison: the old image no longer matches.
    assert esptool(board.url, "verify-flash", hex(APP_OFFSET), str(old)).returncode != 0


def test_boot_identity_and_signatures_follow_the_flashed_version(board: VirtualBoard) -> None:
    assert (
        esptool(board.url, "write-flash", "-z", "0x10000", str(fixture_path("5.0.3"))).returncode
        == 0
    )
    console = boot(board)
    assert board.signer is not None and board.signer.name == "c"  # the firmware's own C core
    try:
        ident = console.call("identity")
        assert ident["ok"] and ident["fw"] == "5.0.3" and ident["hmac_mode"] == "legacy"
        assert ident["device_id"] == DEVICE_ID and ident["mac"] == MAC.lower()
        assert ident["project"] == "claim_probe"
        for child in ("child-1", "Child-ABC", " Mixed_Case "):
            signed = console.call("sign", child_id=child, nonce=NONCE)
            assert signed["hmac_hex"] == sign_claim(DEVICE_ID, child, NONCE, OOB, "legacy")
            expected = ClaimRequest(DEVICE_ID, child, NONCE, signed["hmac_hex"], "5.0.3")
            assert signed["body"] == expected.to_json().decode()
        fresh = console.call("sign", child_id="child-1")  # board-made nonce
        assert len(fresh["nonce"]) == 32 and fresh["nonce"] != NONCE
        assert verify_claim_hmac(
            DEVICE_ID, "child-1", fresh["nonce"], OOB, fresh["hmac_hex"], "legacy"
        )
        # Into the ROM loader by command, flash 5.1.0, back to run: normalised now.
        assert console.call("download")["ok"]
    finally:
        console.close()
    assert board.wait_mode("download")
    assert (
        esptool(board.url, "write-flash", "-z", "0x10000", str(fixture_path("5.1.0"))).returncode
        == 0
    )
    console = boot(board)
    try:
        ident = console.call("identity")
        assert ident["fw"] == "5.1.0" and ident["hmac_mode"] == "normalized"
        signed = console.call("sign", child_id="Child-ABC", nonce=NONCE)
        assert signed["hmac_hex"] == sign_claim(DEVICE_ID, "Child-ABC", NONCE, OOB, "normalized")
        assert signed["hmac_hex"] != sign_claim(DEVICE_ID, "Child-ABC", NONCE, OOB, "legacy")
        bad = console.call("sign", nonce=NONCE)
        assert bad["ok"] is False and "child_id" in bad["error"]
        assert console.call("selfdestruct")["ok"] is False
        console.pump(0.5)
        assert any("heartbeat" in line for line in console.logs)  # logs keep coming
    finally:
        console.close()


def test_corrupted_image_boots_into_an_error_loop(board: VirtualBoard, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt_image(build_image(ImageSpec("5.0.3")), "checksum"))
    assert esptool(board.url, "write-flash", "0x10000", str(bad)).returncode == 0
    console = boot(board)
    try:
        first = console.wait_frame(lambda f: f.get("event") == "image_error")
        second = console.wait_frame(lambda f: f.get("event") == "image_error")
        assert "Checksum failed" in first["reason"] and first == second
        assert any("rst:0x3 (SW_RESET)" in line for line in console.logs)  # it keeps rebooting
        assert any(line.startswith("E (") and "esp_image" in line for line in console.logs)
        assert board.mode == "error"
        console.port.write(encode_frame({"id": 1, "cmd": "ping"}))
        console.pump(0.3)
        assert not any(f.get("id") == 1 for f in console.frames)  # nobody answers
    finally:
        console.close()


def test_claim_over_the_network_reaches_the_server(board: VirtualBoard) -> None:
    from harness.server.config import ServerConfig
    from harness.server.embedded import EmbeddedServer
    from harness.server.seed import Seed

    seed = Seed.from_dict(
        {
            "devices": [
                {"device_id": DEVICE_ID.lower(), "oob_secret_hex": OOB.hex(), "is_active": True}
            ],
            "children": [{"child_id": "child-1", "is_active": True}],
        }
    )
    board.flash.write(APP_OFFSET, fixture_path("5.0.3").read_bytes())
    with EmbeddedServer(ServerConfig(seed=seed)) as server:
        console = boot(board)
        try:
            ok = console.call("claim", url=server.url, child_id="child-1")
            assert ok["ok"] and ok["status"] == 200, ok
            assert ok["correlation_id"] and ok["body"]["token_type"] == "Bearer"
            missing = console.call("claim", url=server.url, child_id="child-404")
            assert missing["ok"] and missing["status"] == 404
        finally:
            console.close()


def test_rfc2217_dtr_rts_reset_selects_the_mode() -> None:
    with VirtualBoard(mac=MAC, listen="rfc2217://127.0.0.1:0", boot=True) as b:
        b.flash.write(APP_OFFSET, fixture_path("5.1.0").read_bytes())
        b.reset()
        assert b.wait_mode("run")
        boots = b.boots
        # esptool's own ClassicReset enters the ROM loader; --after hard-reset runs the app.
        out = esptool(b.url, "read-mac", reset=["--no-stub"])
        assert out.returncode == 0, out.stdout + out.stderr
        assert "cc:db:a7:95:ba:a4" in out.stdout and "Hard resetting via RTS pin" in out.stdout
        assert b.wait_mode("run", timeout=3)
        assert b.boots >= boots + 2  # one into download, one back into run


def test_pty_port_flash_boot_and_replug(tmp_path: Path) -> None:
    with VirtualBoard(mac=MAC, listen="pty", flash_path=tmp_path / "flash.bin") as b:
        url = b.url
        z = esptool(url, "write-flash", "-z", "0x10000", str(fixture_path("5.0.3")))
        assert z.returncode == 0, z.stdout + z.stderr
        console = boot(b)
        try:
            assert console.call("identity")["fw"] == "5.0.3"
        finally:
            console.close()
        b.unplug()
        assert not Path(url).exists()
        with pytest.raises(serial.SerialException):
            serial.serial_for_url(url)
        b.replug()
        assert b.url == url and Path(url).exists()
        console = Console(url)
        try:
            b.reset()
            console.wait_frame(lambda f: f.get("event") == "boot")
            assert console.call("ping")["ok"]
        finally:
            console.close()
    # The flash file persisted what esptool wrote.
    data = (tmp_path / "flash.bin").read_bytes()
    assert len(data) == 4 << 20
    assert data[APP_OFFSET : APP_OFFSET + 2912] == fixture_path("5.0.3").read_bytes()


def test_socket_unplug_refuses_then_replug_serves_same_url(board: VirtualBoard) -> None:
    board.flash.write(APP_OFFSET, fixture_path("5.0.3").read_bytes())
    url = board.url
    console = boot(board)
    board.unplug()
    try:
        with pytest.raises(serial.SerialException):
            console.pump(0.2)
            console.port.write(b"x" * 10)
            console.port.read(1)
    finally:
        console.close()
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(url)
    board.replug()  # powers up again: boots while nobody is connected, as after USB re-enumeration
    assert board.url == url
    assert board.wait_mode("run")
    console = Console(url)
    try:
        assert console.call("identity")["device_id"] == DEVICE_ID
    finally:
        console.close()


def test_cli_prints_url_first_resets_on_signal_and_control(tmp_path: Path) -> None:
    flash_file = tmp_path / "flash.bin"
    image = fixture_path("5.1.0").read_bytes()
    blank = bytearray(b"\xff" * (4 << 20))
    blank[APP_OFFSET : APP_OFFSET + len(image)] = image
    flash_file.write_bytes(bytes(blank))
    proc = subprocess.Popen(
        [
            *HARNESS,
            "hil",
            "virtual-board",
            "--mac",
            MAC,
            "--flash",
            str(flash_file),
            "--control",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        mac = esptool(url, "read-mac")
        assert mac.returncode == 0 and "cc:db:a7:95:ba:a4" in mac.stdout
        console = Console(url)
        try:
            time.sleep(0.1)
            proc.send_signal(signal.SIGUSR1)
            boot_event = console.wait_frame(lambda f: f.get("event") == "boot", timeout=10)
            assert boot_event["fw"] == "5.1.0" and boot_event["hmac_mode"] == "normalized"
            assert any("App version:      5.1.0" in line for line in console.logs)
        finally:
            console.close()
        # The control port: the hand that pulls the cable and presses the buttons.
        host, port = proc.stdout.readline().strip().removeprefix("tcp://").split(":")
        with (
            socket.create_connection((host, int(port)), timeout=5) as ctl,
            ctl.makefile("rwb", buffering=0) as f,
        ):
            f.write(b"unplug\n")
            assert f.readline() == b"ok off unplugged\n"
            with pytest.raises(serial.SerialException):
                serial.serial_for_url(url)
            f.write(b"replug\n")
            assert f.readline().startswith(b"ok ")
            f.write(b"reset download\n")
            assert f.readline() == b"ok download\n"
            assert esptool(url, "read-mac").returncode == 0
            f.write(b"jump\n")
            assert f.readline().startswith(b"error unknown command")
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 0


@pytest.mark.parametrize(("after", "command"), [("no-reset", "run"), ("soft-reset", "read-mac")])
def test_esptool_starts_the_app_over_a_plain_socket(
    board: VirtualBoard, after: str, command: str
) -> None:
    """No modem lines on socket://, but FLASH_END (esptool run / soft-reset) leaves the ROM."""
    board.flash.write(APP_OFFSET, fixture_path("5.0.3").read_bytes())
    reset = ["--before", "no-reset", "--after", after, "--no-stub"]
    out = esptool(board.url, command, reset=reset)
    assert out.returncode == 0, out.stdout + out.stderr
    assert board.wait_mode("run", timeout=3)
    console = Console(board.url)
    try:
        assert console.call("identity")["fw"] == "5.0.3"
    finally:
        console.close()


def test_fleet_cohort_table_decides_the_signing_mode(tmp_path: Path) -> None:
    text = (ROOT / "fleets" / "teddy-v5.toml").read_text()
    assert 'firmware_version = "5.1.0"' in text
    fleet = tmp_path / "fleet.toml"
    # A fleet whose 5.1.0 cohort still signs legacy: the board must follow the table.
    fleet.write_text(text.replace('signing = "normalized"', 'signing = "legacy"'))
    assert cohort_signing_table(fleet)["5.1.0"] == "legacy"
    assert cohort_signing_table(None)["5.1.0"] == "normalized"  # the default fleet
    with VirtualBoard(mac=MAC, boot=True, fleet=fleet) as b:
        b.flash.write(APP_OFFSET, fixture_path("5.1.0").read_bytes())
        console = boot(b)
        try:
            assert console.call("identity")["hmac_mode"] == "legacy"
            signed = console.call("sign", child_id="Child-1", nonce=NONCE)
            assert signed["hmac_hex"] == sign_claim(DEVICE_ID, "Child-1", NONCE, OOB, "legacy")
        finally:
            console.close()
    with pytest.raises(HarnessInputError, match="not found"):
        VirtualBoard(fleet=tmp_path / "missing.toml")


def test_builtin_signing_rule() -> None:
    assert builtin_signing_mode("5.0.3") == "legacy"
    assert builtin_signing_mode("4.9.9") == "legacy"
    assert builtin_signing_mode("5.1.0") == "normalized"
    assert builtin_signing_mode("v6.0.1-rc2") == "normalized"


def test_pty_output_is_lost_while_nobody_holds_the_port() -> None:
    """As on a USB serial port: nothing queues up for a client that opens later."""
    with VirtualBoard(mac=MAC, listen="pty", boot=True, heartbeat_s=0.05) as b:
        b.flash.write(APP_OFFSET, fixture_path("5.0.3").read_bytes())
        b.reset()
        assert b.wait_mode("run")
        time.sleep(0.5)  # ~10 heartbeats with nobody listening
        assert b.app is not None
        opened_ms = b.app.ms()
        console = Console(b.url)
        try:
            console.pump(0.4)
        finally:
            console.close()
    stamps = [int(line.split("(")[1].split(")")[0]) for line in console.logs if "heartbeat" in line]
    assert stamps, console.logs
    assert min(stamps) >= opened_ms - 60  # at most the one line in flight at open
    assert not any("App version" in line for line in console.logs)  # the banner went nowhere
