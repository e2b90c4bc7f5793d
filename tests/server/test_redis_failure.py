"""Redis stopped mid-run: the contract's four Redis-failure rows, for all 32 combinations.

Each combination gets its own server on one private redis-server; the servers
first prove Redis works, then Redis is stopped under them, then started again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.flags import Flags
from harness.server import EmbeddedServer, ServerConfig
from tests.server.httpclient import Client
from tests.server.world import World, claim_body
from tests.support.services import RedisServer


def expected_when_redis_down(f: Flags) -> int:
    """Contract: idempotency on -> carry on iff DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE;
    idempotency off -> fail closed (503) unless FAIL_OPEN_ON_REDIS_ERROR."""
    if f.enable_idempotency:
        return 200 if f.disable_idempotency_on_redis_failure else 503
    return 200 if f.fail_open_on_redis_error else 503


@pytest.fixture()
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_four_redis_failure_rows(private_redis: RedisServer) -> None:
    combos = Flags.all_combinations()
    worlds = {f: World.make(f"{f.key()}-{uuid.uuid4().hex[:6]}") for f in combos}
    servers = {
        f: EmbeddedServer(ServerConfig(flags=f, seed=worlds[f].seed(), redis_url=private_redis.url))
        for f in combos
    }
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(EmbeddedServer.start, servers.values()))
    try:
        clients = {f: Client(s.url) for f, s in servers.items()}
        for f in combos:  # Redis up: the normal path, and the pool holds live connections
            w = worlds[f]
            assert clients[f].claim(claim_body(w.lower, w.child, w.lower_oob)).status == 200
            assert clients[f].get("/health/redis").status == 200

        private_redis.stop()
        failures = []
        for f in combos:
            w, client = worlds[f], clients[f]
            want = expected_when_redis_down(f)
            body = claim_body(w.lower, w.child, w.lower_oob)
            first, retry = client.claim(body), client.claim(body)
            health = client.get("/health/redis")
            got = (first.status, retry.status, health.status)
            # Unprotected: the identical retry is a fresh claim (new token, not a cached replay).
            if want == 200 and (
                first.body == retry.body or "x-idempotent-request" in retry.headers
            ):
                failures.append(f"{f.describe()}: retry without Redis looked cached")
            if want == 503 and first.json() != {"detail": "Replay protection store unavailable"}:
                failures.append(f"{f.describe()}: 503 body {first.body!r}")
            if got != (want, want, 503):
                failures.append(f"{f.describe()}: expected {(want, want, 503)}, got {got}")
            if client.get("/health/db").status != 200:
                failures.append(f"{f.describe()}: /health/db not 200 with only Redis down")
        assert not failures, "\n".join(failures)

        private_redis.start()
        for f in combos:  # and back: replay protection returns without a restart
            w, client = worlds[f], clients[f]
            assert client.get("/health/redis").status == 200
            body = claim_body(w.lower, w.child, w.lower_oob)
            assert client.claim(body).status == 200
            assert client.claim(body).status == (200 if f.enable_idempotency else 409)
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(EmbeddedServer.stop, servers.values()))
