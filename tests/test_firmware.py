"""Firmware profiles: cohorts send what the public firmware's two claim paths send.

The facts are CONTRACT.md section 1's, written out here; the soak and compat runs
show section 7's finding for the live path on both server builds.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import subprocess
from collections import Counter
from dataclasses import dataclass

import pytest

from harness.compat import CompatOptions, run_compat
from harness.firmware import CLAIM_DEVICE, LIVE
from harness.flags import Flags
from harness.fleet import load_fleet, parse_fleet
from harness.oracle import expect_send
from harness.profiles import HEAD_STATIC_SECRET, V5_HEAD, ServerProfile
from harness.protocol import derive_oob_v5
from harness.run import SoakOptions, run_soak
from tests.support import HARNESS, ROOT

FLEET = load_fleet(ROOT / "fleets" / "firmware.toml")
AUTO = Flags(enable_auto_register=True)


def _cohort_device(name: str, n: int = 0):  # type: ignore[no-untyped-def]
    cohort = next(c for c in FLEET.cohorts if c.name == name)
    return FLEET.device(cohort.offset + n)


def test_identities_and_keys_follow_each_claim_path() -> None:
    mac = "CCDBA795BAA4"
    assert CLAIM_DEVICE.device_id(mac) == "CCDBA795BAA4"
    assert CLAIM_DEVICE.key_id(mac) == "CCDBA795BAA4"
    assert LIVE.device_id(mac) == "teddy-esp32-ccdba795baa4"
    # the live path's key is the derivation of another string: the contract's constant
    assert derive_oob_v5(LIVE.key_id(mac)) == (
        "20F98D30602B1F5359C2775CC6BC74389CDE906348676F9B4D89B93151C77182"
    )
    live = _cohort_device("live-unprovisioned")
    assert live.device_id.startswith("teddy-esp32-ccdba7")
    mac_of = live.device_id.removeprefix("teddy-esp32-").upper()
    assert live.oob == bytes.fromhex(derive_oob_v5(f"Teddy-ESP32-{mac_of[4:]}"))
    assert live.oob != bytes.fromhex(derive_oob_v5(live.device_id))
    claim = _cohort_device("claim-device")
    assert claim.device_id == claim.device_id.upper() and len(claim.device_id) == 12
    assert claim.oob == bytes.fromhex(derive_oob_v5(claim.device_id))


def test_live_body_has_four_fields_and_its_own_user_agent() -> None:
    live = _cohort_device("live-nvs")
    body = json.loads(live.body("ab" * 16, "cd" * 32))
    assert set(body) == {"device_id", "child_id", "nonce", "hmac_hex"}
    assert dict(live.headers) == {"User-Agent": "AI-Teddy-Bear-ESP32/2.0.0"}
    assert live.firmware_version is None  # so the oracle validates no firmware_version


def test_claim_device_bodies_and_headers_equal_harness_sign() -> None:
    for n in range(3):
        dev = _cohort_device("claim-device", n)
        nonce = f"{n:02x}" * 16
        proc = subprocess.run(
            [*HARNESS, "sign", "--device-id", dev.device_id, "--child-id", dev.child_id,
             "--nonce", nonce, "--oob", dev.oob.hex(), "--firmware-version",
             dev.cohort.firmware_version, "--firmware", "claim-device", "--headers"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        head, body = proc.stdout.split("\n\n", 1)
        signed = json.loads(body)["hmac_hex"]
        assert body.rstrip("\n").encode() == dev.body(nonce, signed)
        assert signed == hmac.new(dev.oob, dev.message(nonce), "sha256").hexdigest()
        sent = [("Content-Type", "application/json"), *dev.headers]
        assert head.splitlines() == [f"{k}: {v}" for k, v in sent]


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    assert [LIVE.backoff_s(n, 0.0) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert LIVE.backoff_s(1, -1.0) == 0.75 and LIVE.backoff_s(1, 1.0) == 1.25
    assert LIVE.backoff_s(9, 1.0) == 37.5  # the cap, plus its jitter


@dataclass
class Dev:
    device_id: str
    oob: bytes
    child_id: str = "child-0001"
    signing: str = "legacy"
    provisioned: bool = False
    active: bool = True
    child_state: str = "active"
    firmware_version: str | None = None


def test_on_v5_head_only_the_constants_mac_can_claim_unprovisioned() -> None:
    """CONTRACT.md section 7: the live path without an NVS secret."""
    lucky = Dev("teddy-esp32-ccdba795baa4", HEAD_STATIC_SECRET)
    other = Dev("teddy-esp32-ccdba7000001", bytes.fromhex(derive_oob_v5("Teddy-ESP32-A7000001")))
    head = ServerProfile(build=V5_HEAD)
    assert min(expect_send(head, lucky).statuses) == 200
    assert min(expect_send(head, other).statuses) == 401
    v5 = ServerProfile(AUTO)  # v5.0 stores the derivation of the ID sent: 401 for both
    assert min(expect_send(v5, lucky).statuses) == 401
    assert min(expect_send(v5, other).statuses) == 401


@pytest.mark.parametrize("profile", ["v5.0", "v5-head"])
def test_a_soak_follows_the_live_attempts_and_judges_every_send(profile: str) -> None:
    options = SoakOptions(
        fleet=FLEET, claims=300, concurrency=16, flags=AUTO, profile=profile, keepalive=True
    )
    outcome = asyncio.run(run_soak(options))
    results = outcome.results
    failed = {n for n, t in results.checks.items() if not t.passed}
    assert not failed, {n: results.checks[n].examples for n in failed}
    attempts = Counter(
        status for (label, status), n in results.by_scenario.items()
        for _ in range(n) if label == "firmware_attempt"
    )  # fmt: skip
    # unprovisioned live devices get 401 each time; an NVS device's attempt after a lost
    # answer's 409 gets its 200
    assert attempts["401"] > 0 and set(attempts) <= {"200", "401"}
    assert outcome.extra["firmware_gave_up"] > 0  # five attempts, then they give up
    # a device that gives up made 4 fresh attempts after its planned one; one that recovers
    # did so on its first fresh attempt
    gave_up = outcome.extra["firmware_gave_up"]
    assert outcome.extra["firmware_attempts"] == 4 * gave_up + attempts["200"]


def test_compat_shows_each_paths_fate_per_server_profile() -> None:
    rows = {}
    for profile in ("v5.0", "v5-head"):
        report = asyncio.run(
            run_compat(CompatOptions(FLEET, flags=AUTO, claims_per_cohort=40, profile=profile))
        )
        assert not report.disagreements()
        key = report.config(False, False).key
        rows[profile] = {c.name: report.cells[(c.name, key)].outcomes for c in report.cohorts}
    # v5.0: per-device secrets; the live path without NVS signs with another key: 401.
    assert set(rows["v5.0"]["live-unprovisioned"]) == {"401"}
    assert set(rows["v5.0"]["live-nvs"]) == {"200"}  # a fresh attempt recovers a lost answer
    # v5-head: one static secret for everyone; none of these MACs yields it.
    assert {k for r in rows["v5-head"].values() for k in r} <= {"401", "409"}


def test_firmware_and_id_style_together_are_one_line() -> None:
    text = (
        "[fleet]\nname='x'\n[[cohorts]]\nname='a'\ncount=1\nfirmware='live'\nid_style='mac-lower'\n"
    )
    with pytest.raises(Exception, match="derives the ID from the MAC"):
        parse_fleet(text, "x.toml")
    with pytest.raises(Exception, match="unknown firmware 'esp-idf'"):
        parse_fleet(text.replace("id_style='mac-lower'\n", "").replace("live", "esp-idf"))


class _SwallowingProxy:
    """A proxy in front of a claim server that keeps back the answer to the first send of
    every body (the claim reaches the server; the device hears nothing) and passes resends."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: set[bytes] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head + body)
            await up_writer.drain()
            answer = await up_reader.read()  # Connection: close: the whole answer
            up_writer.close()
            if body in self.seen:
                writer.write(answer)
                await writer.drain()
            else:
                self.seen.add(body)
                await reader.read()  # hold the line until the device gives up on it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def test_a_live_resend_after_a_lost_answer_may_be_a_replay() -> None:
    """Idempotency on: the first send reached the server but its answer never came back;
    the firmware resends the same body and gets the cached 200 with X-Idempotent-Request.
    That is right, not a "header on a first answer" violation; only the lost answers are."""
    from harness.server import EmbeddedServer

    text = (
        "[fleet]\nname='live'\nseed=5\n[children]\ncount=2\n[[cohorts]]\nname='live-nvs'\n"
        "count=3\nfirmware='live'\noob='provisioned'\ntime_scale=0.01\n"
    )
    fleet = parse_fleet(text, "live.toml")
    idem = Flags(enable_idempotency=True)

    async def main():  # type: ignore[no-untyped-def]
        from harness.server.config import ServerConfig

        async with EmbeddedServer(ServerConfig(flags=idem, seed=fleet.to_seed())) as server:
            proxy = _SwallowingProxy(server.port)
            listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
            port = listener.sockets[0].getsockname()[1]
            async with listener:
                options = SoakOptions(
                    target=f"http://127.0.0.1:{port}",
                    fleet=fleet,
                    claims=3,
                    concurrency=3,
                    flags=idem,
                    timeout=0.5,
                    jwt_secret=server.jwt_secret,
                )
                return await run_soak(options)

    outcome = asyncio.run(main())
    results = outcome.results
    resent = {k: n for (label, k), n in results.by_scenario.items() if label == "firmware_resend"}
    assert resent == {"200": 3}, results.by_scenario
    checks = results.checks["first_claim"]
    assert checks.violations == 3  # the three answers that never came
    assert all(e["got"] == "timeout" for e in checks.examples), checks.examples


def test_sign_as_claim_device_needs_its_firmware_version() -> None:
    proc = subprocess.run(
        [*HARNESS, "sign", "--device-id", "CCDBA795BAA4", "--child-id", "c", "--nonce",
         "00" * 16, "--oob", "ab" * 32, "--firmware", "claim-device"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--firmware-version" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_retry_habits_say_which_failures_a_device_tries_again_after() -> None:
    from harness.firmware import CLAIM_DEVICE, LIVE, OUTAGE, habits_for

    assert LIVE.retries(None) and LIVE.retries(401) and LIVE.retries(503)
    assert not LIVE.retries(200)
    assert not CLAIM_DEVICE.retries(None) and not CLAIM_DEVICE.retries(503)
    assert OUTAGE.retries(None) and OUTAGE.retries(503) and OUTAGE.retries(502)
    assert not OUTAGE.retries(404) and not OUTAGE.retries(401) and not OUTAGE.retries(500)
    assert habits_for(None, None) is OUTAGE and habits_for("live", None) is LIVE
    assert habits_for("live", "none") is None and habits_for(None, "claim-device") is CLAIM_DEVICE
