"""Locust FastHttpUser doing the harness's claims: what a team would write instead of the harness.

Each task makes a fresh nonce and HMAC and posts the claim body, marking the
request failed unless the answer is 200. The devices are the bench fleet, so
the null server answers 200 with valid tokens. Run headless by benchmarks.run.
"""

from __future__ import annotations

import json
import os
from hashlib import sha256
from hmac import new as hmac_new
from itertools import count

from locust import FastHttpUser, constant, task

from benchmarks.fleet import DEFAULT_DEVICES, FIRMWARE, bench_fleet
from harness.protocol.claim import CLAIM_PATH

_DEVICES = list(bench_fleet(int(os.environ.get("BENCH_DEVICES", DEFAULT_DEVICES))).devices())
_NEXT = count()
_HEADERS = {"Content-Type": "application/json", "User-Agent": f"ESP32-TeddyBear/{FIRMWARE}"}


class ClaimUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def claim(self) -> None:
        dev = _DEVICES[next(_NEXT) % len(_DEVICES)]
        nonce = os.urandom(16).hex()
        msg = (dev.device_id + dev.child_id).encode() + bytes.fromhex(nonce)
        body = {
            "device_id": dev.device_id,
            "child_id": dev.child_id,
            "nonce": nonce,
            "hmac_hex": hmac_new(dev.oob, msg, sha256).hexdigest(),
            "firmware_version": FIRMWARE,
        }
        with self.client.post(
            CLAIM_PATH,
            data=json.dumps(body, separators=(",", ":")),
            headers=_HEADERS,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
