"""A real run: /metrics mid-run passes promtool; the server's deltas match what the harness saw."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import urllib.request

from harness.flags import Flags
from harness.fleet import load_fleet
from harness.metrics import (
    SoakMetrics,
    compare_server_deltas,
    scrape_server_counters,
    serve_metrics,
    server_counters_section,
)
from harness.probe import probe_seed_device
from harness.protocol import new_nonce, normalize_id, sign_claim
from harness.protocol.claim import CLAIM_PATH, ClaimRequest
from harness.run import RunObserver, SoakOptions, run_soak
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from harness.server.seed import Seed, SeedChild, SeedDevice
from harness.transport import make_transport
from tests.support import ROOT, free_port, require_binary

SOAK = ROOT / "fleets" / "soak.toml"


def test_exposition_scraped_mid_run_passes_promtool() -> None:
    promtool = require_binary("promtool", "prometheus")
    fleet = load_fleet(SOAK)
    metrics = SoakMetrics(run_id="mid-run", fleet=fleet.name)
    server = serve_metrics(metrics.registry, 0, host="127.0.0.1")
    scraped: list[str] = []
    running = threading.Event()
    done = threading.Event()

    def scrape_while_running() -> None:
        running.wait(30)
        while not done.is_set():
            with urllib.request.urlopen(server.url, timeout=5) as resp:
                text = resp.read().decode()
            if "harness_run_running 1.0" in text and 'outcome="200"' in text:
                scraped.append(text)
                return
            done.wait(0.02)

    class Started(RunObserver):
        def on_start(self, info: object) -> None:
            running.set()

    poller = threading.Thread(target=scrape_while_running)
    poller.start()
    try:
        asyncio.run(
            run_soak(
                SoakOptions(
                    fleet=fleet, claims=500, run_id="mid-run", observers=[metrics, Started()]
                )
            )
        )
    finally:
        done.set()
        poller.join(10)
        server.stop()
    assert scraped, "no scrape saw the run in progress"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=scraped[0], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'harness_run_info{fleet="soak",run_id="mid-run"} 1.0' in scraped[0]


def test_server_deltas_agree_with_what_the_harness_saw() -> None:
    flags = Flags(enable_idempotency=True, enable_auto_register=True)
    fleet = load_fleet(SOAK)
    with EmbeddedServer(ServerConfig(flags=flags, seed=fleet.to_seed())) as server:
        outcome = asyncio.run(
            run_soak(
                SoakOptions(
                    target=server.url, fleet=fleet, claims=800, flags=flags, server_counters=True
                )
            )
        )
    rows = compare_server_deltas(
        outcome.server_before, outcome.server_after, outcome.results, outcome.extra
    )
    by = {r["counter"]: r for r in rows}
    assert all(r["agrees"] is True for r in rows), rows
    # Every kind of count was exercised, so agreement is not 0 == 0.
    assert all(r["server_delta"] > 0 for r in rows), rows
    assert by["claim_replay_conflict_total"]["harness_observed"] == outcome.results.by_status["409"]
    assert server_counters_section(rows)["agrees"] is True


def test_traffic_the_harness_did_not_send_shows_as_disagreement() -> None:
    device = probe_seed_device()
    seed_dev = SeedDevice(normalize_id(device.device_id), device.oob.hex())
    fleet = load_fleet(SOAK)
    base = fleet.to_seed()
    seed = Seed((*base.devices, seed_dev), (*base.children, SeedChild(device.child_id)))
    config = ServerConfig(seed=seed)
    with EmbeddedServer(config) as server:
        before = scrape_server_counters(server.url)
        outcome = asyncio.run(run_soak(SoakOptions(target=server.url, fleet=fleet, claims=300)))

        async def other_client() -> int:
            t = make_transport(server.url)
            nonce = new_nonce()
            hmac_hex = sign_claim(device.device_id, device.child_id, nonce, device.oob)
            body = ClaimRequest(device.device_id, device.child_id, nonce, hmac_hex).to_json()
            try:
                return (await t.post(CLAIM_PATH, body)).status
            finally:
                await t.aclose()

        assert asyncio.run(other_client()) == 200
        after = scrape_server_counters(server.url)
    rows = {
        r["counter"]: r
        for r in compare_server_deltas(before, after, outcome.results, outcome.extra)
    }
    success = rows["claim_success_total"]
    assert success["agrees"] is False
    assert success["server_delta"] == success["harness_observed"] + 1


def test_a_target_without_metrics_gives_no_counters() -> None:
    assert scrape_server_counters(f"http://127.0.0.1:{free_port()}") == {}
