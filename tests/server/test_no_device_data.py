"""``/metrics`` and the health endpoints are scraped and shown by whoever runs the server's
monitoring: they must carry no device ID, child ID, nonce, HMAC, secret or token, however
the claims went (issued, replayed, refused, auto-registered, a store down)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from harness.flags import Flags
from harness.protocol import derive_oob_v5
from harness.protocol.claim import REFRESH_PATH
from harness.server import EmbeddedServer, ServerConfig
from tests.support.httpclient import Client
from tests.support.world import World, claim_body, random_oob

ENDPOINTS = ("/metrics", "/health", "/health/db", "/health/redis")
ALL_ON = Flags(
    enable_idempotency=True,
    disable_idempotency_on_redis_failure=True,
    enable_auto_register=True,
)


def _pieces(value: str) -> set[str]:
    """The value itself and every 16-character piece of it, lower-cased."""
    low = value.strip().lower()
    return {low} | {low[i : i + 16] for i in range(max(0, len(low) - 15))}


def _leaks(text: str, sensitive: set[str]) -> list[str]:
    low = text.lower()
    return sorted(v[:6] + "..." for v in sensitive if any(p in low for p in _pieces(v)))


def _claims(client: Client, world: World, outcomes: int) -> set[str]:
    """Claims of every outcome; returns every sensitive value that went over the wire."""
    sensitive = set(world.secrets()) | {
        world.lower, world.upper, world.disabled, world.child, world.child_off,
    }  # fmt: skip

    def send(body: Any) -> int:
        if isinstance(body, dict):
            sensitive.update(str(v) for k, v in body.items() if k != "firmware_version")
        reply = client.claim(body)
        if reply.status == 200:
            data = reply.json()
            sensitive.update(str(data[k]) for k in ("access_token", "refresh_token"))
            sensitive.add(str(data.get("device_session_id", "")))
        return reply.status

    ok = claim_body(world.lower, world.child, world.lower_oob, firmware_version="5.0.1")
    statuses = [send(ok), send(ok)]  # issued, then (idempotency on) replayed or refused
    other_hmac = claim_body(world.lower, world.child, random_oob())["hmac_hex"]
    statuses.append(send(dict(ok, hmac_hex=other_hmac)))
    statuses.append(send(claim_body(world.upper, world.child, world.upper_oob)))
    statuses.append(send(claim_body(world.disabled, world.child, world.disabled_oob)))
    statuses.append(send(claim_body(world.lower, world.child_off, world.lower_oob)))
    statuses.append(send(claim_body(world.lower, world.child, random_oob())))
    new = world.unknown_prefixed("nodata")
    sensitive.add(derive_oob_v5(new))
    statuses.append(send(claim_body(new, world.child, derive_oob_v5(new))))  # auto-registered
    statuses.append(send(claim_body(f"other-{world.tag}-zz", world.child, random_oob())))
    bad = claim_body(world.upper, world.child, world.upper_oob)
    statuses.append(send(dict(bad, nonce=bad["nonce"][:-1])))  # 422 echoes its input
    last = client.claim(claim_body(world.upper, world.child, world.upper_oob))
    if last.status == 200:
        tokens = last.json()
        sensitive.update(tokens[k] for k in ("access_token", "refresh_token"))
        refreshed = client.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]})
        if refreshed.status == 200:
            sensitive.add(refreshed.json()["access_token"])
    assert len(set(statuses)) >= outcomes, statuses  # the claims really went different ways
    return {s for s in sensitive if len(s.strip()) >= 6}


@pytest.mark.parametrize(
    ("profile", "redis_outage"),
    [("v5.0", None), ("v5-head", None), ("v5.0", "down-later")],
)
def test_metrics_and_health_carry_no_device_data(profile: str, redis_outage: str | None) -> None:
    world = World.make(f"nd-{uuid.uuid4().hex[:6]}")
    config = ServerConfig(
        flags=ALL_ON,
        seed=world.seed(),
        profile_name=profile,
        environment="production",
        redis_outage=redis_outage,
    )
    with EmbeddedServer(config) as server, Client(server.url) as client:
        # Redis down: every claim that needs it is a 503, the rest refused before it.
        sensitive = _claims(client, world, 2 if redis_outage else 5) | {server.jwt_secret}
        bodies = {path: client.get(path) for path in ENDPOINTS}
    metrics = bodies["/metrics"].body.decode()
    assert "claim_requests_total" in metrics  # the page was really the counters
    assert 'claim_requests_total{status="200"}' in metrics
    if redis_outage:
        assert bodies["/health/redis"].status == 503  # the store down shows, its keys do not
    for path, reply in bodies.items():
        text = reply.body.decode() + " " + " ".join(f"{k}: {v}" for k, v in reply.headers.items())
        assert not _leaks(text, sensitive), f"{path} carries per-device data"


def test_the_leak_check_sees_a_leak() -> None:
    """The check above would see a device ID or a 16-char piece of a token, in any case."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    assert _leaks('claim_requests_total{device="TEDDY-ESP32-AB12CD"} 1', {"teddy-esp32-ab12cd"})
    assert _leaks(f"x {token[20:36].upper()} y", {token})
    assert not _leaks("claim_requests_total 1", {"teddy-esp32-ab12cd", token})
