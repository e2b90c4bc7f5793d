"""The oracle against the contract, table by table: no network, no server."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from harness.flags import Flags
from harness.oracle import (
    Expectation,
    PairExpectation,
    Sent,
    ServerProfile,
    check_category,
    device_status,
    expect_concurrent,
    expect_send,
    judge_pair,
    judge_send,
)
from harness.profiles import ATOMIC, HEAD_STATIC_SECRET, V5_HEAD
from harness.protocol import derive_oob_v5

STATIC = bytes(range(32))


@dataclass
class Dev:
    """Device facts as the oracle sees them (VirtualDevice has the same attributes)."""

    device_id: str
    child_id: str = "child-0001"
    oob: bytes = b""
    signing: str = "legacy"
    provisioned: bool = True
    active: bool = True
    child_state: str = "active"
    firmware_version: str | None = "5.0.3"

    def __post_init__(self) -> None:
        if not self.oob:
            self.oob = bytes.fromhex(derive_oob_v5(self.device_id))


UPPER = Dev("CCDBA795BAA4")
LOWER = Dev("ccdba795baa4")
NORM = Dev("CCDBA795BAA5", signing="normalized")
NORM_LOWER = Dev("ccdba795baa6", signing="normalized")
SPACES = Dev(" ccdba795baa7 ")
UPPER_CHILD = Dev("ccdba795baa8", child_id="CHILD-0001")
AUTO = Dev("esp32-a1b2c3", provisioned=False)
AUTO_TEDDY = Dev("teddy-esp32-00a1", provisioned=False)
AUTO_UPPER = Dev("Teddy-ESP32-00A1", provisioned=False)
AUTO_STATIC = Dev("esp32-static1", provisioned=False, oob=STATIC)
UNKNOWN = Dev("CCDBA7000001", provisioned=False)
DISABLED = Dev("CCDBA7000002", active=False)
NO_CHILD = Dev("ccdba7000003", child_state="unknown")
OFF_CHILD = Dev("ccdba7000004", child_state="inactive")


def profile(**flags: bool) -> ServerProfile:
    return ServerProfile(Flags(**flags))


BASE = profile()
NORMALIZE = profile(normalize_ids_in_hmac=True)
AUTOREG = profile(enable_auto_register=True)
AUTOREG_NORM = profile(enable_auto_register=True, normalize_ids_in_hmac=True)
IDEM = profile(enable_idempotency=True)


@pytest.mark.parametrize(
    ("prof", "dev", "status"),
    [
        # NORMALIZE_IDS_IN_HMAC off: the server HMACs the IDs as received.
        (BASE, UPPER, 200),
        (BASE, LOWER, 200),
        (BASE, NORM, 401),  # normalised firmware, case-preserving server
        (BASE, NORM_LOWER, 200),  # nothing to normalise: both agree
        (BASE, SPACES, 422),  # the pattern is checked on the raw value: padding is refused
        (BASE, UPPER_CHILD, 200),
        # NORMALIZE_IDS_IN_HMAC on: legacy firmware with upper case or padding fails.
        (NORMALIZE, UPPER, 401),
        (NORMALIZE, LOWER, 200),
        (NORMALIZE, NORM, 200),
        (NORMALIZE, SPACES, 422),
        (BASE, Dev("ccdba795baa9", firmware_version="5.0.3 beta"), 422),
        (BASE, Dev("ccdba795baaa", firmware_version="5" * 33), 422),
        (BASE, Dev("ccdba795baab", firmware_version="5.0.3-rc_1"), 200),
        (NORMALIZE, UPPER_CHILD, 401),
        # Unknown devices: auto-registration only for the prefixes, secret from lower-case d.
        (BASE, AUTO, 404),
        (AUTOREG, AUTO, 200),
        (AUTOREG, AUTO_TEDDY, 200),
        (AUTOREG, AUTO_UPPER, 401),  # its firmware derives from the upper-case ID
        (AUTOREG_NORM, AUTO_UPPER, 401),  # normalising the message does not fix the key
        (AUTOREG, AUTO_STATIC, 401),
        (AUTOREG, UNKNOWN, 404),  # no prefix: never created
        # Lookup order: disabled (403) before HMAC, child (404) after it.
        (BASE, DISABLED, 403),
        (NORMALIZE, DISABLED, 403),
        (BASE, NO_CHILD, 404),
        (BASE, OFF_CHILD, 404),
        (NORMALIZE, Dev("CCDBA7000005", child_state="unknown"), 401),  # HMAC first
    ],
)
def test_first_claim_status(prof: ServerProfile, dev: Dev, status: int) -> None:
    exp = expect_send(prof, dev)
    assert exp.statuses == frozenset({status}), exp.describe()
    assert not exp.replay


def test_static_auto_register_secret_profile() -> None:
    prof = replace(AUTOREG, auto_register_secret=STATIC)
    assert device_status(prof, AUTO_STATIC)[0] == 200
    assert device_status(prof, AUTO)[0] == 401  # its v5 secret is not the static one


def test_bad_hmac_fails_only_after_lookup() -> None:
    assert device_status(BASE, LOWER, "bad")[0] == 401
    assert device_status(BASE, DISABLED, "bad")[0] == 403
    assert device_status(BASE, UNKNOWN, "bad")[0] == 404


GOOD_200 = (Sent("good", 200),)


@pytest.mark.parametrize(
    ("idem", "dev", "hmac", "history", "statuses", "replay"),
    [
        # Identical retry after a lost response.
        (True, LOWER, "good", GOOD_200, {200}, True),
        (False, LOWER, "good", GOOD_200, {409}, False),
        # The first failed (nothing cached): with idempotency on it carries on to fail again.
        (True, NO_CHILD, "good", (Sent("good", 404),), {404}, False),
        (False, LOWER, "good", (Sent("good", 401),), {409}, False),
        # Same nonce, another HMAC: 409 either way.
        (True, LOWER, "other", GOOD_200, {409}, False),
        (False, LOWER, "other", GOOD_200, {409}, False),
        # A bad HMAC burns the nonce: the corrected retry gets 409 either way.
        (True, LOWER, "good", (Sent("bad", 401),), {409}, False),
        (False, LOWER, "good", (Sent("bad", 401),), {409}, False),
    ],
)
def test_nonce_history(
    idem: bool,
    dev: Dev,
    hmac: str,
    history: tuple[Sent, ...],
    statuses: set[int],
    replay: bool,
) -> None:
    exp = expect_send(profile(enable_idempotency=idem), dev, hmac, history)  # type: ignore[arg-type]
    assert exp.statuses == frozenset(statuses), exp.describe()
    assert exp.replay is replay


def test_retry_of_a_failed_first_claim_repeats_the_failure() -> None:
    prof = profile(enable_idempotency=True, normalize_ids_in_hmac=True)
    exp = expect_send(prof, UPPER, "good", (Sent("good", 401),))
    assert exp.statuses == frozenset({401})


def test_concurrent_pairs() -> None:
    on = expect_concurrent(IDEM, LOWER)
    assert on.outcomes == frozenset({(200, 200)}) and on.same_token
    atomic = expect_concurrent(replace(IDEM, build=ATOMIC), LOWER)
    assert atomic == on  # the contract's expectation does not bend for the v5 race
    off = expect_concurrent(BASE, LOWER)
    assert off.outcomes == frozenset({(200, 409)}) and not off.same_token
    failing = expect_concurrent(IDEM, NORM)
    assert failing.outcomes == frozenset({(401, 401)}) and not failing.same_token
    assert expect_concurrent(BASE, UNKNOWN).outcomes == frozenset({(404, 409)})


@pytest.mark.parametrize(
    ("flags", "redis", "status"),
    [
        # No client yet: only idempotency on with DISABLE_... carries on, unprotected.
        (
            {"enable_idempotency": True, "disable_idempotency_on_redis_failure": True},
            "down-since-start",
            200,
        ),
        (
            {"enable_idempotency": True, "disable_idempotency_on_redis_failure": False},
            "down-since-start",
            503,
        ),
        ({"enable_idempotency": False, "fail_open_on_redis_error": False}, "down-since-start", 503),
        # FAIL_OPEN_ON_REDIS_ERROR is read nowhere.
        ({"enable_idempotency": False, "fail_open_on_redis_error": True}, "down-since-start", 503),
        # Down under a made client: 503 whatever the flags.
        (
            {"enable_idempotency": True, "disable_idempotency_on_redis_failure": True},
            "down-later",
            503,
        ),
        ({"enable_idempotency": False, "fail_open_on_redis_error": True}, "down-later", 503),
    ],
)
def test_redis_down(flags: dict[str, bool], redis: str, status: int) -> None:
    prof = ServerProfile(Flags(**flags), redis=redis)  # type: ignore[arg-type]
    # Even a retry gets no replay handling: the store that would remember it is down.
    assert expect_send(prof, LOWER, "good", GOOD_200).statuses == frozenset({status})


@pytest.mark.parametrize(
    ("dev", "category"),
    [
        (LOWER, "first_claim"),
        (UPPER, "case_insensitive_id"),
        (SPACES, "validation"),
        (UPPER_CHILD, "case_insensitive_id"),
        (NORM, "hmac_normalization"),
        (AUTO, "auto_register"),
        (UNKNOWN, "auto_register"),
    ],
)
def test_check_category(dev: Dev, category: str) -> None:
    assert check_category(dev) == category


TOKEN_A = b'{"access_token":"a.b.c"}'
TOKEN_B = b'{"access_token":"x.y.z"}'


def test_judge_send() -> None:
    plain = Expectation(frozenset({200}))
    replay = Expectation(frozenset({200}), replay=True)
    yes = {"x-idempotent-request": "true"}
    assert judge_send(plain, 200, {}, TOKEN_A, None) is None
    assert judge_send(plain, 409, {}, b"", None) == "status 409"
    assert judge_send(plain, 200, yes, TOKEN_A, None) is not None  # header on a first answer
    assert judge_send(replay, 200, yes, TOKEN_A, TOKEN_A) is None
    assert judge_send(replay, 200, {}, TOKEN_A, TOKEN_A) is not None  # header missing
    assert judge_send(replay, 200, yes, TOKEN_B, TOKEN_A) is not None  # another token
    reordered = b'{"expires_in": 3600, "access_token": "a.b.c"}'
    first = b'{"access_token":"a.b.c","expires_in":3600}'
    assert judge_send(replay, 200, yes, reordered, first) is None  # the same JSON document
    other = b'{"access_token":"a.b.c","expires_in":60}'
    assert judge_send(replay, 200, yes, other, first) == (
        "200 with a different body than the first answer"
    )


def test_judge_pair() -> None:
    same = PairExpectation(frozenset({(200, 200)}), True)
    assert judge_pair(same, (200, 200), (TOKEN_A, TOKEN_A)) is None
    assert judge_pair(same, (200, 200), (TOKEN_A, TOKEN_B)) is not None
    assert judge_pair(same, (200, 409), (TOKEN_A, b"")) is not None
    either = PairExpectation(frozenset({(200, 409)}), False)
    assert judge_pair(either, (409, 200), (b"", TOKEN_A)) is None
    assert judge_pair(either, (200, 200), (TOKEN_A, TOKEN_B)) is not None


HEAD = ServerProfile(build=V5_HEAD)
HEAD_DEV = replace(HEAD, environment="development")
HEAD_KEYED = Dev("ccdba7000010", oob=HEAD_STATIC_SECRET)
HEAD_AUTO = Dev("esp32-00b1c2", provisioned=False, oob=HEAD_STATIC_SECRET)


@pytest.mark.parametrize(
    ("prof", "dev", "status"),
    [
        (HEAD, LOWER, 401),  # its own secret is ignored: one static secret for all
        (HEAD, HEAD_KEYED, 200),
        (HEAD, HEAD_AUTO, 200),  # created although ENABLE_AUTO_REGISTER is off
        (HEAD, AUTO, 401),  # created, but it signs with its own v5 derivation
        (HEAD, UNKNOWN, 404),
        (HEAD, DISABLED, 404),  # the lookup skips disabled devices
        (HEAD, Dev("esp32-0000d1", active=False, oob=HEAD_STATIC_SECRET), 500),
        (HEAD, replace(HEAD_KEYED, child_state="unknown"), 404),
        (HEAD_DEV, replace(HEAD_KEYED, child_state="unknown"), 200),  # a made-up profile
        (HEAD_DEV, replace(HEAD_KEYED, child_state="inactive"), 200),
        (replace(BASE, environment="development"), replace(LOWER, child_state="unknown"), 404),
    ],
)
def test_v5_head_first_claim(prof: ServerProfile, dev: Dev, status: int) -> None:
    assert expect_send(prof, dev).statuses == frozenset({status}), expect_send(prof, dev).why


def test_v5_head_losing_concurrent_insert_may_be_a_500() -> None:
    idem = replace(HEAD, flags=Flags(enable_idempotency=True))
    fresh = expect_concurrent(idem, HEAD_AUTO)
    assert fresh.outcomes == frozenset({(200, 200), (200, 500)}) and fresh.same_token
    assert expect_concurrent(idem, HEAD_AUTO, registered=True).outcomes == frozenset({(200, 200)})
    # v5.0 inserts ON CONFLICT DO NOTHING: no 500
    auto = replace(IDEM, flags=Flags(enable_idempotency=True, enable_auto_register=True))
    assert expect_concurrent(auto, AUTO_TEDDY).outcomes == frozenset({(200, 200)})
