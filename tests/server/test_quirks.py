"""The quirks of the real builds, one row per fact of CONTRACT.md sections 5 and 6.

The expected answers are written here from the contract, not taken from the
oracle or the server. v5.0's rows over every flag combination are
``test_contract_table.py``; the Redis rows are ``test_redis_failure.py``; the
PostgreSQL rows are in ``test_server_extras.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from harness.flags import Flags
from harness.profiles import HEAD_STATIC_SECRET
from harness.protocol import derive_oob_v5
from harness.server import EmbeddedServer, ServerConfig
from harness.server.seed import Seed, SeedDevice
from tests.support.httpclient import Client, post_together
from tests.support.world import World, claim_body

HEAD = HEAD_STATIC_SECRET.hex().upper()
IDEM = Flags(enable_idempotency=True)


def head_world(tag: str) -> tuple[World, Seed]:
    """A world whose 'lower' device is provisioned with v5-head's static secret too."""
    w = World.make(f"{tag}-{uuid.uuid4().hex[:6]}")
    seed = Seed(
        devices=(
            *w.seed().devices,
            SeedDevice(f"keyed-{w.tag}-dev", HEAD),
            SeedDevice(f"esp32-{w.tag}-off", HEAD, is_active=False),
            SeedDevice(f"dev-{w.tag}-off", HEAD, is_active=False),
        ),
        children=w.seed().children,
    )
    return w, seed


Row = tuple[str, dict[str, Any], Callable[[World], list[dict[str, Any]]], list[int]]
ROWS: list[Row] = [
    # section 5: one static secret for every device; the database secret is ignored
    ("head: a device signing with its own secret", {}, lambda w: [
        claim_body(w.lower, w.child, w.lower_oob)], [401]),
    ("head: a provisioned device signing with the static secret", {}, lambda w: [
        claim_body(f"keyed-{w.tag}-dev", w.child, HEAD)], [200]),
    # auto-registration whatever ENABLE_AUTO_REGISTER says (it is off here)
    ("head: unknown prefixed device, static secret, flag off", {}, lambda w: [
        claim_body(w.unknown_prefixed("new"), w.child, HEAD)] * 1, [200]),
    ("head: unknown prefixed device signing with its v5 derivation", {}, lambda w: [
        claim_body(w.unknown_prefixed("own"), w.child, derive_oob_v5(w.unknown_prefixed("own")))],
        [401]),
    ("head: unknown device without a prefix", {}, lambda w: [
        claim_body(f"other-{w.tag}-dev", w.child, HEAD)], [404]),
    # the lookup filters is_active: a disabled device is missing; prefixed, the create fails
    ("head: disabled device", {}, lambda w: [claim_body(f"dev-{w.tag}-off", w.child, HEAD)],
     [404]),
    ("v5.0: the same disabled device", {"profile_name": "v5.0"}, lambda w: [
        claim_body(f"dev-{w.tag}-off", w.child, HEAD)], [403]),
    ("head: disabled prefixed device", {}, lambda w: [
        claim_body(f"esp32-{w.tag}-off", w.child, HEAD)], [500]),
    # the child fallback outside production
    ("head production: unknown child", {}, lambda w: [
        claim_body(f"keyed-{w.tag}-dev", f"nobody-{w.tag}", HEAD)], [404]),
    ("head development: unknown child", {"environment": "development"}, lambda w: [
        claim_body(f"keyed-{w.tag}-dev", f"nobody-{w.tag}", HEAD)], [200]),
    ("head development: inactive child", {"environment": "development"}, lambda w: [
        claim_body(f"keyed-{w.tag}-dev", w.child_off, HEAD)], [200]),
    ("v5.0 development: unknown child", {"profile_name": "v5.0", "environment": "development"},
     lambda w: [claim_body(w.lower, f"nobody-{w.tag}", w.lower_oob)], [404]),
    # steps 1-3 as in v5.0
    ("head: identical retry, idempotency off", {}, lambda w: [
        claim_body(f"keyed-{w.tag}-dev", w.child, HEAD, nonce="ab" * 16)] * 2, [200, 409]),
    ("head: an ID with spaces", {}, lambda w: [
        claim_body(f" keyed-{w.tag}-dev", w.child, HEAD)], [422]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "bodies", "want"), ROWS, ids=[r[0] for r in ROWS])
def test_v5_head_row(
    name: str,
    options: dict[str, Any],
    bodies: Callable[[World], list[dict[str, Any]]],
    want: list[int],
) -> None:
    w, seed = head_world("quirk")
    config = ServerConfig(seed=seed, **{"profile_name": "v5-head", **options})
    with EmbeddedServer(config) as server, Client(server.url) as client:
        got = [client.claim(body).status for body in bodies(w)]
    assert got == want, name


def test_v5_head_200_body_and_made_up_child() -> None:
    w, seed = head_world("body")
    config = ServerConfig(seed=seed, profile_name="v5-head", environment="staging")
    with EmbeddedServer(config) as server, Client(server.url) as client:
        known = client.claim(claim_body(f"keyed-{w.tag}-dev", w.child, HEAD)).json()
        made_up = client.claim(claim_body(f"keyed-{w.tag}-dev", f"nobody-{w.tag}", HEAD)).json()
    assert re.fullmatch(r"[0-9a-f]{32}", known["pairing_code"])
    payload = json.loads(base64.b64decode(known["provisioning_payload"]))
    assert payload["status"] == "provisioned" and payload["pairing_code"] == known["pairing_code"]
    assert payload["device_id"] == f"keyed-{w.tag}-dev" and payload["child_id"] == w.child
    assert uuid.UUID(known["child_profile"]["id"])  # the child's UUID
    assert made_up["child_profile"]["name"] == "Friend"
    assert made_up["child_profile"]["id"] == f"nobody-{w.tag}"


def test_v5_head_concurrent_first_claims_of_a_new_device_the_loser_gets_500() -> None:
    """Whether the claims overlap is up to the scheduler: rounds until one does."""
    w, seed = head_world("race")
    config = ServerConfig(flags=IDEM, seed=seed, profile_name="v5-head")
    seen: list[list[int]] = []
    with EmbeddedServer(config) as server:
        for i in range(10):
            body = json.dumps(claim_body(w.unknown_prefixed(f"twin{i}"), w.child, HEAD)).encode()
            statuses = sorted(r.status for r in asyncio.run(post_together(server.url, body, 8)))
            seen.append(statuses)
            assert set(statuses) <= {200, 500} and statuses[0] == 200  # one insert wins
            if 500 in statuses:
                break
    assert any(500 in s for s in seen), seen


def test_v5_0_concurrent_first_claims_of_a_new_device_both_200() -> None:
    w = World.make(f"race0-{uuid.uuid4().hex[:6]}")
    flags = Flags(enable_idempotency=True, enable_auto_register=True)
    device = w.unknown_prefixed("twin")
    body = json.dumps(claim_body(device, w.child, derive_oob_v5(device))).encode()
    with EmbeddedServer(ServerConfig(flags=flags, seed=w.seed())) as server:
        replies = asyncio.run(post_together(server.url, body, 8))
    assert [r.status for r in replies] == [200] * 8  # INSERT ... ON CONFLICT DO NOTHING


def test_unknown_profile_and_bad_options_are_one_line_errors() -> None:
    from harness.errors import HarnessInputError

    with pytest.raises(HarnessInputError, match="unknown profile 'v6'"):
        ServerConfig(profile_name="v6")
    with pytest.raises(HarnessInputError, match="--auto-register-secret"):
        ServerConfig(profile_name="v5-head", auto_register_secret=bytes(32))
    with pytest.raises(HarnessInputError, match="--atomic-idempotency"):
        ServerConfig(profile_name="v5-head", atomic_idempotency=True)
    with pytest.raises(HarnessInputError, match="--redis-state"):
        ServerConfig(redis_outage="sometimes")
