"""The 200's ``device_config`` per build, the refresh endpoint's refusals, and the
access-token lifetime (``access_ttl_s``), against the real embedded server.

Expected values are written from the upstream routers (claim_api.py step 7/8 and
``refresh_device_token`` in 1b33a66 and 7b2d2f3), not read from the server.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest

import harness.server.app as app_module
from harness.errors import HarnessInputError
from harness.profiles import HEAD_STATIC_SECRET, make_profile
from harness.protocol import check_token
from harness.protocol.claim import CLAIM_PATH, REFRESH_PATH
from harness.protocol.tokens import AUDIENCE, ISSUER
from harness.server import EmbeddedServer, ServerConfig
from harness.server.embedded import embedded_server
from harness.server.seed import Seed, SeedDevice
from tests.cli.test_serve import run_harness, serving
from tests.support.httpclient import Client
from tests.support.world import World, claim_body

HEAD = HEAD_STATIC_SECRET.hex().upper()
CONFIG_KEYS = [
    "session_id",
    "websocket_url",
    "api_base_url",
    "heartbeat_interval",
    "reconnect_delay",
    "max_message_size",
    "supported_audio_formats",
    "firmware_update_url",
]


def _world(tag: str) -> tuple[World, Seed]:
    """A world plus one device v5-head accepts (provisioned with its static secret)."""
    w = World.make(f"{tag}-{uuid.uuid4().hex[:6]}")
    seed = Seed(
        devices=(*w.seed().devices, SeedDevice(f"keyed-{w.tag}-dev", HEAD)),
        children=w.seed().children,
    )
    return w, seed


def _claim(client: Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    reply = client.claim(body, **headers)
    assert reply.status == 200, reply.body
    data: dict[str, Any] = reply.json()
    return data


def _unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# --- device_config ---------------------------------------------------------------------


def test_v5_0_device_config_is_the_routers_with_the_configured_host() -> None:
    """v5.0: wss/https on config.HOST (the bind address, no port), /ws/esp32/chat, opus."""
    w, seed = _world("dc50")
    with EmbeddedServer(ServerConfig(seed=seed)) as server, Client(server.url) as client:
        # Forwarded headers change nothing on v5.0: its URLs are fixed.
        data = _claim(
            client,
            claim_body(w.lower, w.child, w.lower_oob),
            **{"X-Forwarded-Host": "teddy.example", "X-Forwarded-Proto": "http"},
        )
    config = data["device_config"]
    assert list(config) == CONFIG_KEYS
    assert config == {
        "session_id": data["device_session_id"],
        "websocket_url": "wss://127.0.0.1/ws/esp32/chat",
        "api_base_url": "https://127.0.0.1/api/v1",
        "heartbeat_interval": 30,
        "reconnect_delay": 5,
        "max_message_size": 8192,
        "supported_audio_formats": ["opus", "mp3"],
        "firmware_update_url": "https://127.0.0.1/api/v1/esp32/firmware",
    }


@pytest.mark.parametrize("routed", [False, True], ids=["fast-path", "fastapi-route"])
def test_v5_head_device_config_follows_the_request(
    routed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v5-head: X-Forwarded-Host else Host, X-Forwarded-Proto else the scheme; ws unless
    https; /ws/esp32/connect, pcm_s16le. The FastAPI route must agree with the fast path."""
    w, seed = _world("dchead")
    device = f"keyed-{w.tag}-dev"
    config = ServerConfig(seed=seed, profile_name="v5-head")
    with EmbeddedServer(config) as server, Client(server.url) as client:
        if routed:  # the route is registered; only the wrapper's check stops matching
            monkeypatch.setattr(app_module, "CLAIM_PATH", "/not-the-fast-path")
        plain = _claim(client, claim_body(device, w.child, HEAD))["device_config"]
        forwarded = _claim(
            client,
            claim_body(device, w.child, HEAD),
            **{"X-Forwarded-Host": "teddy.example:8443", "X-Forwarded-Proto": "https"},
        )
        proto_only = _claim(
            client, claim_body(device, w.child, HEAD), **{"X-Forwarded-Proto": "HTTPS"}
        )["device_config"]
        port = server.port
    here = f"127.0.0.1:{port}"  # http.client's Host header
    assert list(plain) == CONFIG_KEYS
    assert plain["heartbeat_interval"] == 30
    assert plain["reconnect_delay"] == 5 and plain["max_message_size"] == 8192
    assert plain["websocket_url"] == f"ws://{here}/ws/esp32/connect"
    assert plain["api_base_url"] == f"http://{here}/api/v1"
    assert plain["firmware_update_url"] == f"http://{here}/api/v1/esp32/firmware"
    assert plain["supported_audio_formats"] == ["pcm_s16le", "mp3"]
    fwd = forwarded["device_config"]
    assert fwd["session_id"] == forwarded["device_session_id"]
    assert fwd["websocket_url"] == "wss://teddy.example:8443/ws/esp32/connect"
    assert fwd["api_base_url"] == "https://teddy.example:8443/api/v1"
    assert fwd["firmware_update_url"] == "https://teddy.example:8443/api/v1/esp32/firmware"
    # Only "https" exactly means wss: the router compares the string as sent.
    assert proto_only["websocket_url"] == f"ws://{here}/ws/esp32/connect"
    assert proto_only["api_base_url"] == f"HTTPS://{here}/api/v1"


def test_a_cached_replay_carries_the_first_answers_device_config() -> None:
    from harness.flags import Flags

    w, seed = _world("dcreplay")
    config = ServerConfig(seed=seed, flags=Flags(enable_idempotency=True))
    body = claim_body(w.lower, w.child, w.lower_oob)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        first, again = _claim(client, body), _claim(client, body)
    assert again == first
    assert first["device_config"]["session_id"] == first["device_session_id"]


# --- access-token lifetime ---------------------------------------------------------------


def test_configured_access_ttl_on_claim_and_refresh() -> None:
    w, seed = _world("ttl")
    ttl = 42
    # atomic: v5.0 with its refresh decoding the audience (v5's refuses every genuine token).
    config = ServerConfig(seed=seed, access_ttl_s=ttl, profile_name="atomic")
    with EmbeddedServer(config) as server, Client(server.url) as client:
        tokens = _claim(client, claim_body(w.lower, w.child, w.lower_oob))
        reply = client.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]})
        secret = server.jwt_secret
    assert tokens["expires_in"] == ttl
    access = _unverified(tokens["access_token"])
    assert access["exp"] - access["iat"] == ttl
    refresh = _unverified(tokens["refresh_token"])
    assert refresh["exp"] - refresh["iat"] == 7 * 24 * 3600  # the refresh token keeps its week
    assert reply.status == 200
    fresh = reply.json()
    assert list(fresh) == ["access_token", "token_type", "expires_in"]  # RefreshResponse
    assert fresh["token_type"] == "Bearer" and fresh["expires_in"] == ttl
    claims = _unverified(fresh["access_token"])
    assert claims["exp"] - claims["iat"] == ttl
    assert claims["session_id"] == tokens["device_session_id"]  # the refresh token's own
    assert claims["type"] == "device_access"
    good = check_token(fresh["access_token"], w.lower, w.child, secret=secret, access_ttl_s=ttl)
    assert good.ok, good.problems
    default = check_token(fresh["access_token"], w.lower, w.child, secret=secret)
    assert default.problems == [f"exp - iat = {ttl}, expected 3600"]


def test_embedded_server_takes_the_access_ttl() -> None:
    w, seed = _world("ttlemb")
    with embedded_server(make_profile(), seed, access_ttl_s=120) as server:
        assert server.config.access_ttl_s == 120
        with Client(server.url) as client:
            tokens = _claim(client, claim_body(w.lower, w.child, w.lower_oob))
    assert tokens["expires_in"] == 120
    claims = _unverified(tokens["access_token"])
    assert claims["exp"] - claims["iat"] == 120
    assert embedded_server(make_profile()).config.access_ttl_s == 3600


@pytest.mark.parametrize("value", [9, 0, -5, True, 3.5, 7 * 24 * 3600 + 1])
def test_server_config_refuses_a_bad_access_ttl(value: object) -> None:
    with pytest.raises(HarnessInputError, match="--access-ttl"):
        ServerConfig(access_ttl_s=value)  # type: ignore[arg-type]


def test_serve_access_ttl_option(tmp_path: Any) -> None:
    w, seed = _world("ttlcli")
    path = tmp_path / "seed.json"
    seed.dump(path)
    with serving("--seed", str(path), "--access-ttl", "90") as (port, line, _):
        assert "access tokens live 90 s" in line
        with Client(f"http://127.0.0.1:{port}") as client:
            tokens = _claim(client, claim_body(w.lower, w.child, w.lower_oob))
    assert tokens["expires_in"] == 90
    for bad in ("5", "ten", "1.5"):
        done = run_harness("serve", "--port", "0", "--access-ttl", bad)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "--access-ttl" in lines[0], done.stderr


# --- refresh refusals --------------------------------------------------------------------


def _signed(secret: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iat": now, "exp": now + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, "HS256")


def _refresh_claims(w: World, **changes: Any) -> dict[str, Any]:
    base = {
        "sub": f"device:{w.lower}:child:{w.child}",
        "device_id": w.lower,
        "child_id": w.child,
        "session_id": str(uuid.uuid4()),
        "type": "device_refresh",
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    return {**base, **changes}


def test_v5_refuses_every_genuine_refresh_token() -> None:
    """v5's refresh calls jwt.decode without the audience: PyJWT 2 refuses every token
    with ``aud``, which all of v5's own tokens have. Only an aud-less token gets past."""
    from harness.profiles import BUILDS

    assert BUILDS["v5.0"].refresh_refuses_aud and BUILDS["v5-head"].refresh_refuses_aud
    w, seed = _world("rfv5")
    with EmbeddedServer(ServerConfig(seed=seed)) as server, Client(server.url) as client:
        tokens = _claim(client, claim_body(w.lower, w.child, w.lower_oob))
        genuine = client.post(REFRESH_PATH, {"refresh_token": tokens["refresh_token"]})
        access = client.post(REFRESH_PATH, {"refresh_token": tokens["access_token"]})
        secret = server.jwt_secret
        no_aud = _signed(secret, **_refresh_claims(w, aud=None))
        accepted = client.post(REFRESH_PATH, {"refresh_token": no_aud})
        wrong_type = _signed(secret, **_refresh_claims(w, aud=None, type="device_access"))
        typed = client.post(REFRESH_PATH, {"refresh_token": wrong_type})
    for reply in (genuine, access):
        assert reply.status == 401
        assert reply.json()["error"]["message"] == "Token refresh failed"
    assert accepted.status == 200
    assert typed.status == 401
    assert typed.json()["error"]["message"] == "Invalid token type for refresh"


@pytest.mark.parametrize("bare", [False, True], ids=["deployed", "bare-router"])
def test_refresh_refusals_are_the_routers_401s(bare: bool) -> None:
    """The fixed build (atomic), whose refresh decodes with the audience: the refusals
    v5's code makes after decoding."""
    w, seed = _world("rf")
    config = ServerConfig(seed=seed, bare_router=bare, profile_name="atomic")
    with EmbeddedServer(config) as server, Client(server.url) as client:
        secret = server.jwt_secret
        tokens = _claim(client, claim_body(w.lower, w.child, w.lower_oob))
        cases = {
            "an access token": tokens["access_token"],
            "not a JWT": "x.y.z",
            "another server's": _signed("another-secret-" * 4, **_refresh_claims(w)),
            "expired": _signed(secret, **_refresh_claims(w), exp=int(time.time()) - 60),
            "another audience": _signed(secret, **_refresh_claims(w, aud="someone-else")),
            "no session_id": _signed(secret, **_refresh_claims(w, session_id=None)),
            "empty device_id": _signed(secret, **_refresh_claims(w, device_id="")),
            "numeric device_id": _signed(secret, **_refresh_claims(w, device_id=12345678)),
        }
        replies = {
            name: client.post(REFRESH_PATH, {"refresh_token": t}) for name, t in cases.items()
        }
        # v5 does not check the issuer, nor that the token has an audience at all.
        no_aud = _signed(secret, **_refresh_claims(w, aud=None, iss="anyone"))
        accepted = client.post(REFRESH_PATH, {"refresh_token": no_aud})
    expected = {
        "an access token": "Invalid token type for refresh",
        "not a JWT": "Token refresh failed",
        "another server's": "Token refresh failed",
        "expired": "Token refresh failed",
        "another audience": "Token refresh failed",
        "no session_id": "Invalid refresh token claims",
        "empty device_id": "Invalid refresh token claims",
        "numeric device_id": "Token refresh failed",  # its log line slices device_id
    }
    for name, reply in replies.items():
        assert reply.status == 401, name
        body = reply.json()
        detail = body["detail"] if bare else body["error"]["message"]
        assert detail == expected[name], name
        if not bare:
            assert body["error"]["code"] == "HTTP_401"
    assert accepted.status == 200, accepted.body
    # The refresh router sets no X-Correlation-Id of its own (the claim router does on a
    # 200): only the deployed app's middleware gives it one.
    assert ("x-correlation-id" in accepted.headers) is not bare
    assert _unverified(accepted.json()["access_token"])["device_id"] == w.lower


def test_refresh_body_errors_are_422() -> None:
    with EmbeddedServer() as server, Client(server.url) as client:
        assert client.post(REFRESH_PATH, {"token": "x"}).status == 422
        assert client.post(REFRESH_PATH, {"refresh_token": 5}).status == 422
        assert client.post(REFRESH_PATH, b"{").status == 422
        raw = json.dumps({"refresh_token": "x.y.z"}).encode()
        reply = client.request("POST", REFRESH_PATH, raw, {"Content-Type": "text/plain"})
        assert reply.status == 422
        assert client.get(CLAIM_PATH).status == 405
