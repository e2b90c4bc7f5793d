"""The rest of the server's surface: refresh, rate limit, profiles, PostgreSQL rules, embedding."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import asyncpg
import pytest

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.protocol import check_token, derive_oob_v5
from harness.protocol.claim import CLAIM_PATH, REFRESH_PATH
from harness.server import EmbeddedServer, ServerConfig
from harness.server.embedded import ServerStartError
from tests.support.httpclient import Client, post_together
from tests.support.services import PostgresServer
from tests.support.world import World, claim_body, random_oob

AUTO = Flags(enable_auto_register=True)


def test_refresh_gives_a_new_access_token_for_refresh_tokens_only() -> None:
    world = World.make("refresh")
    # atomic: v5's own refresh refuses every genuine token (test_device_config_and_refresh)
    config = ServerConfig(seed=world.seed(), profile_name="atomic")
    with EmbeddedServer(config) as server, Client(server.url) as client:
        tokens = client.claim(claim_body(world.lower, world.child, world.lower_oob)).json()
        reply = client.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]})
        assert reply.status == 200 and reply.headers["x-correlation-id"]
        fresh = reply.json()
        assert fresh["token_type"] == "Bearer" and fresh["expires_in"] == 3600
        assert check_token(
            fresh["access_token"], world.lower, world.child, secret=server.jwt_secret
        ).ok
        assert client.post(REFRESH_PATH, {"refresh_token": tokens["access_token"]}).status == 401
        assert client.post(REFRESH_PATH, {"refresh_token": "x.y.z"}).status == 401
        assert client.post(REFRESH_PATH, {"token": "x"}).status == 422
        other = EmbeddedServer(ServerConfig(seed=world.seed()))  # another secret
        with other, Client(other.url) as c2:
            assert c2.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]}).status == 401


def test_correlation_id_echoed_when_sane_else_generated() -> None:
    with EmbeddedServer() as server, Client(server.url) as client:
        reply = client.request("GET", "/health", headers={"X-Correlation-Id": "abc-123"})
        assert reply.headers["x-correlation-id"] == "abc-123"
        reply = client.request("GET", "/health", headers={"X-Correlation-Id": "bad value!"})
        assert reply.headers["x-correlation-id"] not in ("", "bad value!")
        for path in ("/nowhere", "/metrics", "/health/db", "/health/redis", CLAIM_PATH):
            assert client.get(path).headers["x-correlation-id"]
        assert client.get(CLAIM_PATH).status == 405  # FastAPI's answer for a wrong method


def test_rate_limit_answers_429_with_retry_after_per_device() -> None:
    world = World.make(f"rl-{uuid.uuid4().hex[:6]}")
    config = ServerConfig(seed=world.seed(), rate_limit=2)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        statuses = [
            client.claim(claim_body(world.lower, world.child, world.lower_oob)).status
            for _ in range(4)
        ]
        assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429]
        limited = client.claim(claim_body(world.lower, world.child, world.lower_oob))
        assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
        # another device is not affected; the 429 did not burn its nonce
        assert client.claim(claim_body(world.upper, world.child, world.upper_oob)).status == 200
        assert client.claim(claim_body(world.upper, world.child, world.upper_oob)).status == 200
        body = claim_body(world.upper, world.child, world.upper_oob)
        assert client.claim(body).status == 429
        time.sleep(1.05)
        assert client.claim(body).status == 200


def test_static_auto_register_profile() -> None:
    world = World.make(f"static-{uuid.uuid4().hex[:6]}")
    static = random_oob()
    config = ServerConfig(flags=AUTO, seed=world.seed(), auto_register_secret=bytes.fromhex(static))
    new = f"Teddy-ESP32-{world.tag}-S"
    with EmbeddedServer(config) as server, Client(server.url) as client:
        assert client.claim(claim_body(new, world.child, derive_oob_v5(new))).status == 401
        assert client.claim(claim_body(new, world.child, static)).status == 200
        # provisioned devices keep their own secret
        assert client.claim(claim_body(world.lower, world.child, static)).status == 401


def test_concurrent_first_claims_register_once_on_postgres(claim_database: str) -> None:
    world = World.make(f"pgrace-{uuid.uuid4().hex[:6]}")
    config = ServerConfig(flags=AUTO, seed=world.seed(), database_url=claim_database)
    new = world.unknown_prefixed("burst")
    bodies = [claim_body(new, world.child, derive_oob_v5(new)) for _ in range(8)]

    async def burst(url: str) -> list[int]:
        replies = await asyncio.gather(
            *(post_together(url, json.dumps(b).encode(), 1) for b in bodies)
        )
        return [r[0].status for r in replies]

    with EmbeddedServer(config) as server, Client(server.url) as client:
        assert asyncio.run(burst(server.url)) == [200] * 8
        metrics = client.get("/metrics").body.decode()
        assert "claim_auto_register_total 1.0" in metrics


def test_postgres_stores_lower_case_and_enforces_it(claim_database: str) -> None:
    world = World.make(f"pgcase-{uuid.uuid4().hex[:6]}")
    with EmbeddedServer(ServerConfig(seed=world.seed(), database_url=claim_database)):
        pass

    async def check() -> None:
        conn = await asyncpg.connect(claim_database)
        try:
            row = await conn.fetchrow(
                "SELECT device_id, oob_secret FROM devices WHERE device_id = $1",
                world.upper.lower(),
            )
            assert row is not None and bytes(row["oob_secret"]) == bytes.fromhex(world.upper_oob)
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO devices (device_id, oob_secret) VALUES ($1, $2)",
                    "UPPER-CASE-ID",
                    b"\0" * 32,
                )
        finally:
            await conn.close()

    asyncio.run(check())


@pytest.mark.parametrize(
    ("profile", "flags", "status", "message"),
    [
        # v5.0 swallows the lookup error: the device is "missing".
        ("v5.0", Flags(), 404, "Device not registered or not found"),
        # ... and with auto-registration on, the failed insert is logged and the record it
        # would have stored used; the child lookup's error is swallowed too: 404.
        ("v5.0", Flags(enable_auto_register=True), 404, "Child profile not found or inactive"),
        ("v5-head", Flags(), 500, "Device claiming service error"),
    ],
)
def test_postgres_down(profile: str, flags: Flags, status: int, message: str) -> None:
    with PostgresServer() as pg:
        url = pg.create_database("down")
        world = World.make(f"pgdown-{uuid.uuid4().hex[:6]}")
        device = world.unknown_prefixed("pg") if flags.enable_auto_register else world.lower
        config = ServerConfig(
            flags=flags, seed=world.seed(), database_url=url, migrate=True, profile_name=profile
        )
        with EmbeddedServer(config) as server, Client(server.url) as client:
            assert client.get("/health/db").status == 200
            pg.stop()
            reply = client.claim(claim_body(device, world.child, derive_oob_v5(device)))
            assert reply.status == status
            assert reply.json()["error"]["message"] == message
            assert client.get("/health/db").status == 503
            assert client.get("/health/redis").status == 200  # memory nonce store


def test_start_errors_are_harness_input_errors() -> None:
    with pytest.raises(ServerStartError, match="cannot connect"):
        EmbeddedServer(ServerConfig(database_url="postgresql://x@127.0.0.1:1/db")).start()
    with EmbeddedServer() as running, pytest.raises(HarnessInputError):
        EmbeddedServer(port=running.port).start()


def test_process_mode_and_async_context() -> None:
    world = World.make("proc")

    async def scenario() -> None:
        async with EmbeddedServer(ServerConfig(seed=world.seed()), mode="process") as srv:
            assert srv.port > 0 and srv.url.endswith(str(srv.port))
            reply = (
                await post_together(
                    srv.url,
                    json.dumps(claim_body(world.lower, world.child, world.lower_oob)).encode(),
                    1,
                )
            )[0]
            assert reply.status == 200
            assert check_token(reply.json()["access_token"], world.lower, world.child,
                               secret=srv.jwt_secret).ok  # fmt: skip

    asyncio.run(scenario())


def test_many_thread_servers_start_fast_and_stop_cleanly() -> None:
    import threading

    before = threading.active_count()
    start = time.perf_counter()
    servers = [EmbeddedServer().start() for _ in range(5)]
    elapsed = (time.perf_counter() - start) / len(servers)
    assert len({s.port for s in servers}) == 5
    for s in servers:
        s.stop()
        s.stop()  # idempotent
    assert elapsed < 1.0
    assert threading.active_count() == before


def _key_shapes(keys: list[str], d: str, c: str, nonce: str, hmac_hex: str) -> None:
    assert f"nonce:{d}:{c}:{nonce}" in keys
    assert f"claim:{d}:{c}:{nonce}:{hmac_hex}" in keys  # the HMAC as sent, not lower-cased


def test_store_keys_and_ttl_memory_and_redis(redis_server) -> None:  # type: ignore[no-untyped-def]
    import redis

    world = World.make(f"keys-{uuid.uuid4().hex[:6]}")
    flags = Flags(enable_idempotency=True)
    body = claim_body(world.upper, world.child.upper(), world.upper_oob)
    body["hmac_hex"] = body["hmac_hex"].upper()  # keys keep it as sent; the check lower-cases
    d, c = world.upper.lower(), world.child.lower()
    with EmbeddedServer(ServerConfig(flags=flags, seed=world.seed())) as server:
        with Client(server.url) as client:
            assert client.claim(body).status == 200
        _key_shapes(list(server.state.nonces._data), d, c, body["nonce"], body["hmac_hex"])
    config = ServerConfig(flags=flags, seed=world.seed(), redis_url=redis_server.url)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        assert client.claim(body).status == 200
    r = redis.Redis.from_url(redis_server.url)
    keys = [k.decode() for k in r.keys(f"*:{d}:*")]
    _key_shapes(keys, d, c, body["nonce"], body["hmac_hex"])
    assert r.get(f"nonce:{d}:{c}:{body['nonce']}") == body["hmac_hex"].encode()
    assert all(0 < r.ttl(k) <= 300 for k in keys)
    assert not any(k.startswith("lock:") for k in keys)  # no atomic lock in v5 mode
    # Idempotency off: device_nonce:..., "used", 900 s on v5.0 and 300 s on v5-head.
    for profile, ttl in (("v5.0", 900), ("v5-head", 300)):
        fresh = claim_body(world.lower, world.child, world.lower_oob)
        config = ServerConfig(seed=world.seed(), redis_url=redis_server.url, profile_name=profile)
        with EmbeddedServer(config) as server, Client(server.url) as client:
            client.claim(fresh)
        key = f"device_nonce:{world.lower}:{world.child}:{fresh['nonce']}"
        assert r.get(key) == b"used" and ttl - 5 < r.ttl(key) <= ttl, profile
    r.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_nonce_reusable_after_ttl(backend: str, request: pytest.FixtureRequest) -> None:
    """A quirk that follows from the TTL: the same body is accepted again once it expired."""
    world = World.make(f"ttl-{backend}-{uuid.uuid4().hex[:6]}")
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    config = ServerConfig(seed=world.seed(), redis_url=redis_url, nonce_ttl_s=1)
    body = claim_body(world.lower, world.child, world.lower_oob)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        assert [client.claim(body).status, client.claim(body).status] == [200, 409]
        time.sleep(1.6)
        assert client.claim(body).status == 200


def test_content_type_handled_as_fastapi_does() -> None:
    world = World.make(f"ctype-{uuid.uuid4().hex[:6]}")
    with EmbeddedServer(ServerConfig(seed=world.seed())) as server, Client(server.url) as client:

        def send(content_type: str | None) -> int:
            raw = json.dumps(claim_body(world.lower, world.child, world.lower_oob)).encode()
            headers = {"Content-Type": content_type} if content_type else {}
            return client.request("POST", CLAIM_PATH, raw, headers).status

        assert send("application/json") == 200
        assert send("application/json; charset=utf-8") == 200
        assert send("application/vnd.teddy+json") == 200
        assert send(None) == 200
        assert send("text/plain") == 422
        raw = json.dumps(claim_body(world.lower, world.child, world.lower_oob)).encode()
        reply = client.request("POST", CLAIM_PATH, raw, {"Content-Type": "text/plain"})
        assert reply.json()["detail"][0]["type"] == "model_attributes_type"


def test_claim_fast_path_answers_like_the_fastapi_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ASGI wrapper answers claims itself; the FastAPI route must give the same answers."""
    import harness.server.app as app_module

    world = World.make(f"fast-{uuid.uuid4().hex[:6]}")
    idem = Flags(enable_idempotency=True)
    ok = claim_body(world.lower, world.child, world.lower_oob)
    sequence: list[tuple[object, str | None]] = [
        (ok, "application/json"),
        (ok, "application/json"),  # cached replay
        (dict(ok, hmac_hex="ab" * 32), "application/json"),  # 409
        (claim_body(world.disabled, world.child, world.disabled_oob), "application/json"),
        (b"{", "application/json"),
        (ok, "text/plain"),
    ]

    def run(bypass: bool) -> list[tuple[int, set[str], object]]:
        out = []
        server = EmbeddedServer(ServerConfig(flags=idem, seed=world.seed()))
        with server, Client(server.url) as client:
            if bypass:  # the route is registered; only the wrapper's check stops matching
                monkeypatch.setattr(app_module, "CLAIM_PATH", "/not-the-fast-path")
            for body, ctype in sequence:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                reply = client.request("POST", CLAIM_PATH, raw, {"Content-Type": ctype or ""})
                names = set(reply.headers) - {"date", "x-correlation-id"}
                data = reply.json()
                if isinstance(data.get("error"), dict):  # a fresh UUID per answer
                    data["error"]["correlation_id"] = bool(data["error"]["correlation_id"])
                shape = sorted(data) if reply.status == 200 else data
                out.append((reply.status, names, shape))
        return out

    fast = run(bypass=False)
    routed = run(bypass=True)
    assert fast == routed
    assert [status for status, _, _ in fast] == [200, 200, 409, 403, 422, 422]


def test_bare_router_has_fastapi_bodies_and_correlation_ids_on_200_only() -> None:
    world = World.make(f"bare-{uuid.uuid4().hex[:6]}")
    config = ServerConfig(seed=world.seed(), bare_router=True)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        ok = client.claim(claim_body(world.lower, world.child, world.lower_oob))
        assert ok.status == 200 and ok.headers.get("x-correlation-id")
        refused = client.claim(claim_body(world.disabled, world.child, world.disabled_oob))
        assert refused.status == 403 and "x-correlation-id" not in refused.headers
        assert refused.json() == {"detail": "Device is disabled or suspended"}


def test_deployed_200_carries_the_routers_and_the_middlewares_correlation_ids() -> None:
    world = World.make(f"cid-{uuid.uuid4().hex[:6]}")
    with EmbeddedServer(ServerConfig(seed=world.seed())) as server:
        raw = json.dumps(claim_body(world.lower, world.child, world.lower_oob)).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST " + CLAIM_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nX-Correlation-Id: mine-123\r\n"
                b"Connection: close\r\nContent-Length: "
                + str(len(raw)).encode()
                + b"\r\n\r\n"
                + raw
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower().split("\r\n")
    cids = [line.split(":", 1)[1].strip() for line in head if line.startswith("x-correlation-id")]
    assert len(cids) == 2 and cids[1] == "mine-123" and cids[0] != "mine-123", cids


def test_error_bodies_are_rendered_like_starlette_json() -> None:
    world = World.make(f"bytes-{uuid.uuid4().hex[:6]}")
    with EmbeddedServer(ServerConfig(seed=world.seed())) as server, Client(server.url) as client:
        reply = client.claim(claim_body(world.disabled, world.child, world.disabled_oob))
        assert reply.body.startswith(
            b'{"error":{"code":"HTTP_403","message":"Device is disabled or suspended",'
            b'"correlation_id":"'
        )
        assert reply.json()["error"]["correlation_id"] != reply.headers["x-correlation-id"]
        reply = client.claim({"device_id": "téddy-esp32", "child_id": "c", "nonce": "00" * 8})
        assert "téddy".encode() in reply.body and b'"loc":["body","device_id"]' in reply.body
        assert client.get("/nowhere").body == b'{"detail":"Not Found"}'
