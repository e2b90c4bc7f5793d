"""What the claim-probe firmware does after boot, for the virtual board.

The board boots the app image at 0x10000 of its flash; this module plays the
firmware that image stands for: it prints ESP-IDF-like boot and log lines and
answers the claim-probe frame protocol (``harness.hil.frames``) with the
behaviour of the version in the image's ``esp_app_desc_t``. The crypto runs
in a ``Signer`` (the C signer core, built for the host, by default), exactly as
the real firmware runs the same C file under ESP-IDF.

Which versions sign legacy and which normalised comes from the fleet's cohort
table (``firmware_version`` -> ``signing``) when a fleet file is given and
readable, else from the built-in rule: 5.0.x and older legacy, 5.1 and later
normalised.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessInputError
from harness.fleet.loader import load_fleet
from harness.hil.frames import encode_frame
from harness.hil.image import AppImage
from harness.protocol import ClaimRequest, mac_to_device_id, user_agent
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.signing import SigningMode
from harness.signer import CSigner

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = ROOT / "fleets" / "teddy-v5.toml"
CLAIM_TIMEOUT_S = 10.0
TAG = "claim_probe"

Signer = (
    Any  # harness.signer.Signer: derive(device_id), sign(device_id, child_id, nonce, oob, mode)
)


def builtin_signing_mode(version: str) -> SigningMode:
    """The documented fallback: 5.0.x and older sign legacy, 5.1 and later normalised."""
    m = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if not m:
        return "legacy"
    return "normalized" if (int(m[1]), int(m[2])) >= (5, 1) else "legacy"


def cohort_signing_table(fleet_path: Path | str | None) -> dict[str, SigningMode]:
    """``firmware_version -> signing`` from a fleet file's cohorts; {} when there is none.

    A fleet file that exists but does not load is bad input (one line, exit 2);
    a missing default fleet is not, the built-in rule applies.
    """
    path = Path(fleet_path) if fleet_path else DEFAULT_FLEET
    if not path.exists():
        if fleet_path:
            raise HarnessInputError("fleet", f"{path} not found")
        return {}
    fleet = load_fleet(path)
    table: dict[str, SigningMode] = {}
    for cohort in fleet.cohorts:
        table.setdefault(cohort.firmware_version, cohort.signing)
    return table


def signing_mode_for(version: str, table: Mapping[str, SigningMode]) -> SigningMode:
    return table.get(version) or builtin_signing_mode(version)


def default_signer() -> Signer:
    """The C signer core, built for the host if needed (the firmware's own code)."""
    return CSigner.build()


@dataclass
class ProbeApp:
    """The claim-probe firmware's state after one boot."""

    mac: bytes
    image: AppImage
    mode: SigningMode
    signer: Signer
    network: bool = True
    boot_time: float = 0.0
    reset_reason: str = "POWERON_RESET"

    def __post_init__(self) -> None:
        self.boot_time = self.boot_time or time.monotonic()
        self.device_id = mac_to_device_id(self.mac)  # as v5 firmware holds it
        self.oob_hex = self.signer.derive(self.device_id)
        self.reboot_to: str | None = None  # "run" | "download" after a reset command

    # -- output -----------------------------------------------------------------

    def ms(self) -> int:
        return int((time.monotonic() - self.boot_time) * 1000)

    def log(self, level: str, tag: str, text: str) -> bytes:
        return f"{level} ({self.ms()}) {tag}: {text}\r\n".encode()

    def banner(self) -> list[bytes]:
        """Second-stage bootloader and app startup lines, then the boot event frame."""
        img = self.image
        lines = [
            self.log("I", "cpu_start", "Pro cpu up."),
            self.log("I", "cpu_start", "Starting app cpu, entry point is 0x40081234"),
            self.log("I", "cpu_start", "Pro cpu start user code"),
            self.log("I", "app_init", "Application information:"),
            self.log("I", "app_init", f"Project name:     {img.project}"),
            self.log("I", "app_init", f"App version:      {img.version}"),
            self.log("I", "app_init", f"Compile time:     {img.compile_time}"),
            self.log("I", "app_init", f"ELF file SHA256:  {img.elf_sha256[:16]}..."),
            self.log("I", "app_init", f"ESP-IDF:          {img.idf_ver}"),
            self.log("I", "main_task", "Calling app_main()"),
            self.log("I", TAG, f"claim probe up, hmac_mode={self.mode}"),
        ]
        if self.network:
            lines.append(self.log("I", "wifi", "connected, got ip:10.0.2.15"))
        else:
            lines.append(self.log("W", "wifi", "no network configured"))
        lines.append(encode_frame(self._boot_event()))
        return lines

    def _boot_event(self) -> dict[str, Any]:
        return {
            "event": "boot",
            "fw": self.image.version,
            "project": self.image.project,
            "device_id": self.device_id,
            "hmac_mode": self.mode,
            "reset_reason": self.reset_reason,
        }

    def heartbeat(self) -> bytes:
        up = self.ms() // 1000
        return self.log("I", TAG, f"heartbeat uptime={up}s free_heap={180000 - up % 97}")

    # -- the frame protocol -----------------------------------------------------

    def handle(self, request: object) -> list[bytes]:
        """Answer one request frame's payload: log lines and one reply frame."""
        if not isinstance(request, dict) or "cmd" not in request:
            return [self.log("W", TAG, "frame without cmd ignored")]
        rid = request.get("id")
        cmd = request.get("cmd")
        try:
            handler = {
                "ping": self._ping,
                "identity": self._identity,
                "sign": self._sign,
                "claim": self._claim,
                "reset": self._reset,
                "download": self._download,
            }.get(str(cmd))
            if handler is None:
                return [self._error(rid, f"unknown command {cmd!r}")]
            logs, reply = handler(request)
        except HarnessInputError as exc:  # ProtocolError included: bad field from the host
            return [self._error(rid, str(exc))]
        return [*logs, encode_frame({"id": rid, "ok": True, **reply})]

    @staticmethod
    def _error(rid: object, message: str) -> bytes:
        return encode_frame({"id": rid, "ok": False, "error": message})

    def _ping(self, _req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        return [], {"uptime_ms": self.ms()}

    def _identity(self, _req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        return [], {
            "device_id": self.device_id,
            "mac": ":".join(f"{b:02x}" for b in self.mac),
            "fw": self.image.version,
            "project": self.image.project,
            "hmac_mode": self.mode,
            "elf_sha256": self.image.elf_sha256,
        }

    def _signed(self, req: dict[str, Any]) -> ClaimRequest:
        child_id = req.get("child_id")
        if not isinstance(child_id, str) or not child_id:
            raise HarnessInputError("child_id", "required (a string)")
        nonce = req.get("nonce")
        if nonce is None:
            nonce = os.urandom(16).hex()  # esp_random() on the board
        if not isinstance(nonce, str):
            raise HarnessInputError("nonce", "must be a hex string")
        hmac_hex = self.signer.sign(
            self.device_id, child_id, nonce, bytes.fromhex(self.oob_hex), self.mode
        )
        return ClaimRequest(self.device_id, child_id, nonce, hmac_hex, self.image.version)

    def _sign(self, req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        claim = self._signed(req)
        return [self.log("I", TAG, "signed claim")], {
            "device_id": claim.device_id,
            "child_id": claim.child_id,
            "nonce": claim.nonce,
            "hmac_hex": claim.hmac_hex,
            "body": claim.to_json().decode(),
        }

    def _claim(self, req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        url = req.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise HarnessInputError("url", "required: the server's base URL (http://...)")
        if not self.network:
            raise HarnessInputError("wifi", "not connected (board started without network)")
        claim = self._signed(req)
        request = urllib.request.Request(
            url.rstrip("/") + CLAIM_PATH,
            data=claim.to_json(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": user_agent(self.image.version),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=CLAIM_TIMEOUT_S) as resp:
                status, headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, exc.headers, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HarnessInputError("http", f"claim failed: {reason}") from None
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        logs = [self.log("I" if status == 200 else "W", TAG, f"claim -> HTTP {status}")]
        return logs, {
            "status": status,
            "correlation_id": headers.get("X-Correlation-Id", ""),
            "nonce": claim.nonce,
            "body": body,
        }

    def _reset(self, _req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        self.reboot_to = "run"
        return [self.log("I", TAG, "restarting")], {}

    def _download(self, _req: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
        self.reboot_to = "download"
        return [self.log("I", TAG, "rebooting into the ROM loader")], {}


def rom_banner(reset_reason: str, download: bool) -> list[bytes]:
    """The first-stage ROM's lines after a reset."""
    code = {"POWERON_RESET": 0x1, "SW_RESET": 0x3, "RTCWDT_RTC_RESET": 0x10}.get(reset_reason, 0x1)
    boot = (
        "0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
        if download
        else "0x13 (SPI_FAST_FLASH_BOOT)"
    )
    lines = [
        b"ets Jun  8 2016 00:22:57\r\n",
        b"\r\n",
        f"rst:0x{code:x} ({reset_reason}),boot:{boot}\r\n".encode(),
    ]
    if download:
        lines.append(b"waiting for download\r\n")
    else:
        lines += [
            b"configsip: 0, SPIWP:0xee\r\n",
            b"clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n",
            b"mode:DIO, clock div:2\r\n",
            b"load:0x3fff0030,len:7112\r\n",
            b"entry 0x40080400\r\n",
        ]
    return lines


def image_error_lines(ms: int, image: AppImage) -> list[bytes]:
    """What the second-stage bootloader prints before it gives up and resets."""
    return [
        f"I ({ms}) boot: ESP-IDF v5.1.2 2nd stage bootloader\r\n".encode(),
        f"I ({ms + 1}) boot: Loaded app from partition at offset 0x10000\r\n".encode(),
        f"E ({ms + 2}) esp_image: {image.reason}\r\n".encode(),
        f"E ({ms + 3}) boot: Factory app partition is not bootable\r\n".encode(),
        f"E ({ms + 4}) boot: No bootable app partitions in the partition table\r\n".encode(),
        encode_frame({"event": "image_error", "reason": image.reason, "offset": 0x10000}),
    ]
