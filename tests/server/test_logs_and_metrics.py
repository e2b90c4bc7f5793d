"""A whole logged server session must not leak an ID, nonce, HMAC, OOB secret or token;
``/metrics`` must parse and its counters must move as the claims say."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from harness.flags import Flags
from harness.protocol import derive_oob_v5
from harness.protocol.claim import REFRESH_PATH
from harness.server import EmbeddedServer, ServerConfig
from tests.support.httpclient import Client, Reply
from tests.support.world import World, claim_body, random_oob

ALL_ON = Flags(
    enable_idempotency=True,
    disable_idempotency_on_redis_failure=True,
    enable_auto_register=True,
)


class Session:
    """Sends claims and remembers every sensitive value that went over the wire."""

    def __init__(self, client: Client, world: World) -> None:
        self.client = client
        self.sensitive: set[str] = set(world.secrets())
        self.sensitive |= {world.lower, world.upper, world.disabled, world.child, world.child_off}

    def claim(self, body: Any, **headers: str) -> Reply:
        if isinstance(body, dict):
            for key in ("device_id", "child_id", "nonce", "hmac_hex"):
                if isinstance(body.get(key), str) and len(body[key].strip()) >= 6:
                    self.sensitive.add(body[key].strip())
        reply = self.client.claim(body, **headers)
        if reply.status == 200:
            data = reply.json()
            self.sensitive |= {data["access_token"], data["refresh_token"]}
            self.sensitive.add(data["device_session_id"])
        return reply


def _leaks(text: str, sensitive: set[str]) -> list[str]:
    low = text.lower()
    found = []
    for value in sensitive:
        if value.lower() in low:
            found.append(value[:6] + "...")
        # a JWT's signature part alone is also a leak
        if value.startswith("eyJ") and value.rsplit(".", 1)[-1] in text:
            found.append("jwt-signature:" + value[:6])
    return found


def test_logged_session_leaks_nothing(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    world = World.make(f"log-{uuid.uuid4().hex[:6]}")
    static = random_oob()
    config = ServerConfig(
        flags=ALL_ON,
        seed=world.seed(),
        log_file=str(log_file),
        auto_register_secret=bytes.fromhex(static),
        profile_name="atomic",  # its refresh answers (v5's refuses every genuine token)
    )
    with EmbeddedServer(config) as server, Client(server.url) as client:
        s = Session(client, world)
        s.sensitive.add(static)
        ok = claim_body(world.lower, world.child, world.lower_oob, firmware_version="5.0.1")
        assert s.claim(ok, **{"X-Correlation-Id": "corr-test-1"}).status == 200
        assert s.claim(ok).status == 200  # cached replay
        other = claim_body(world.lower, world.child, static)["hmac_hex"]
        assert s.claim(dict(ok, hmac_hex=other)).status == 409
        assert s.claim(claim_body(world.upper, world.child, world.upper_oob)).status == 200
        assert s.claim(claim_body(world.disabled, world.child, world.disabled_oob)).status == 403
        assert s.claim(claim_body(world.lower, world.child_off, world.lower_oob)).status == 404
        assert s.claim(claim_body(world.lower, world.child, random_oob())).status == 401
        new = world.unknown_prefixed("logged")
        s.sensitive.add(derive_oob_v5(new))
        assert s.claim(claim_body(new, world.child, static)).status == 200  # static profile
        assert s.claim(claim_body(f"other-{world.tag}-x", world.child, random_oob())).status == 404
        bad = claim_body(world.lower, world.child, world.lower_oob)
        assert s.claim(dict(bad, nonce=bad["nonce"][:-1])).status == 422  # echoes input in body
        assert s.claim(b'{"device_id": "' + world.lower.encode() + b'"').status == 422
        tokens = s.claim(claim_body(world.lower, world.child, world.lower_oob)).json()
        refreshed = client.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]})
        assert refreshed.status == 200
        s.sensitive.add(refreshed.json()["access_token"])
        assert client.post(REFRESH_PATH, {"refresh_token": tokens["access_token"]}).status == 401
        assert client.post(REFRESH_PATH, {"refresh_token": "x.y.z"}).status == 401
        assert client.get("/metrics").status == 200

    text = log_file.read_text()
    lines = text.splitlines()
    requests = [json.loads(line) for line in lines if '"event":"request"' in line]
    assert len(requests) >= 15
    assert all(r["correlation_id"] for r in requests)
    assert requests[0]["correlation_id"] == "corr-test-1"
    assert {r["outcome"] for r in requests if "outcome" in r} >= {
        "issued", "replay_cached", "replay_conflict", "device_disabled", "child_not_found",
        "bad_hmac", "device_not_found", "invalid_body", "refreshed", "bad_refresh_type",
        "refresh_failed",
    }  # fmt: skip
    assert all(json.loads(line) for line in lines)  # every line is one JSON object
    leaks = _leaks(text, s.sensitive)
    assert not leaks, f"unmasked values in the log: {leaks}"
    # and the masks are the shared masking rules, not nothing at all
    assert re.search(r'"device":"tedd\*\*\*"', text)
    assert '"hmac":"***(64)"' in text


def _samples(client: Client) -> dict[str, float]:
    text = client.get("/metrics").body.decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_parse_and_counters_move() -> None:
    world = World.make(f"metrics-{uuid.uuid4().hex[:6]}")
    with EmbeddedServer(ServerConfig(flags=ALL_ON, seed=world.seed())) as server:
        client = Client(server.url)
        before = _samples(client)
        for name in (
            "claim_success_total",
            "claim_replay_cached_total",
            "claim_replay_conflict_total",
            "claim_auto_register_total",
            "claim_request_duration_seconds_count",
        ):
            assert before[name] == 0, name

        def delta(name: str) -> float:
            return _samples(client).get(name, 0) - before.get(name, 0)

        body = claim_body(world.lower, world.child, world.lower_oob)
        assert client.claim(body).status == 200
        assert delta("claim_success_total") == 1
        assert client.claim(body).status == 200
        assert delta("claim_replay_cached_total") == 1
        assert delta("claim_success_total") == 1  # a replay is not a new success
        assert client.claim(dict(body, hmac_hex="ab" * 32)).status == 409
        assert delta("claim_replay_conflict_total") == 1
        new = world.unknown_prefixed("metric")
        for _ in range(3):
            assert client.claim(claim_body(new, world.child, derive_oob_v5(new))).status == 200
        assert delta("claim_auto_register_total") == 1  # registered once, claimed thrice
        assert client.claim(b"{}").status == 422
        assert delta("claim_requests_total{status=422}") == 1
        assert delta("claim_requests_total{status=200}") == 5
        assert delta("claim_request_duration_seconds_count") == 7
        client.close()
