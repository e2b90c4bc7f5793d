"""A real Redis down since start, back, then down under a made client: CONTRACT.md section 3.

All 32 flag combinations, each with its own server on one private redis-server.
The v5 client is made on the first claim whose PING succeeds and kept: before
that, only idempotency on with DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE carries on
(unprotected); after it, every outage is a 503 whatever the flags.
FAIL_OPEN_ON_REDIS_ERROR changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.flags import Flags
from harness.server import EmbeddedServer, ServerConfig
from tests.support.httpclient import Client
from tests.support.services import RedisServer
from tests.support.world import World, claim_body


def expected_since_start(f: Flags) -> int:
    """Written from the contract, not the server: no client yet."""
    return 200 if f.enable_idempotency and f.disable_idempotency_on_redis_failure else 503


@pytest.fixture()
def private_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_redis_down_since_start_back_and_down_later(private_redis: RedisServer) -> None:
    combos = Flags.all_combinations()
    worlds = {f: World.make(f"{f.key()}-{uuid.uuid4().hex[:6]}") for f in combos}
    servers = {
        f: EmbeddedServer(ServerConfig(flags=f, seed=worlds[f].seed(), redis_url=private_redis.url))
        for f in combos
    }
    private_redis.stop()  # the servers start without ever reaching Redis
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(EmbeddedServer.start, servers.values()))
    try:
        clients = {f: Client(s.url) for f, s in servers.items()}
        failures = []
        for f in combos:
            w, client = worlds[f], clients[f]
            want = expected_since_start(f)
            body = claim_body(w.lower, w.child, w.lower_oob)
            first, retry = client.claim(body), client.claim(body)
            if (first.status, retry.status) != (want, want):
                failures.append(f"since start {f.describe()}: {first.status}/{retry.status}")
            if want == 200 and (
                first.body == retry.body or "x-idempotent-request" in retry.headers
            ):
                failures.append(f"since start {f.describe()}: retry without Redis looked cached")
            if want == 503 and first.json()["error"]["message"] != (
                "Nonce verification service unavailable"
            ):
                failures.append(f"since start {f.describe()}: 503 body {first.body!r}")
        assert not failures, "\n".join(failures)

        private_redis.start()
        for f in combos:  # back: the next claim makes the client, replay protection returns
            w, client = worlds[f], clients[f]
            assert client.get("/health/redis").status == 200
            body = claim_body(w.lower, w.child, w.lower_oob)
            assert client.claim(body).status == 200
            assert client.claim(body).status == (200 if f.enable_idempotency else 409)

        private_redis.stop()
        for f in combos:  # down under a made client: 503 whatever the flags
            w, client = worlds[f], clients[f]
            reply = client.claim(claim_body(w.lower, w.child, w.lower_oob))
            message = (
                "Verification service error"
                if f.enable_idempotency
                else ("Nonce verification error")
            )
            if reply.status != 503 or reply.json()["error"]["message"] != message:
                failures.append(f"down later {f.describe()}: {reply.status} {reply.body!r}")
            if client.get("/health/redis").status != 503:
                failures.append(f"down later {f.describe()}: /health/redis not 503")
            if client.get("/health/db").status != 200:
                failures.append(f"down later {f.describe()}: /health/db not 200")
        assert not failures, "\n".join(failures)

        private_redis.start()
        for f in combos:  # and back again without a restart
            w, client = worlds[f], clients[f]
            assert client.claim(claim_body(w.lower, w.child, w.lower_oob)).status == 200
    finally:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(EmbeddedServer.stop, servers.values()))
