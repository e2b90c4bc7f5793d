"""The one judge: every claim counted once, silence judged, back-offs not, pairs even half."""

from __future__ import annotations

from harness.fleet import load_fleet
from harness.judge import Judge
from harness.oracle import CORRELATION_HEADER, Expectation, PairExpectation
from harness.profiles import ServerProfile
from harness.scenarios import Pair, Send
from harness.transport import HttpResponse, TransportTimeout
from tests.support import ROOT

FLEET = load_fleet(ROOT / "fleets" / "soak.toml").scaled(200)
DEV = next(d for d in FLEET.devices() if d.cohort.name == "mac-upper-legacy")
IDS = {CORRELATION_HEADER: "c-1"}


def _judge() -> Judge:
    return Judge(ServerProfile(), None, [])


def test_a_claim_with_no_answer_is_counted_once_and_fails_its_own_check() -> None:
    judge = _judge()
    got = judge.account(DEV, "first_claim", 0.0, 0.0, None, TransportTimeout("slow"), 1.0)
    assert got is None
    r = judge.flush()
    assert (r.sent, dict(r.by_status)) == (1, {"timeout": 1})
    tally = r.checks["case_insensitive_id"]  # the device's own check: an upper-case MAC ID
    assert (tally.evaluated, tally.violations) == (1, 1)
    (example,) = tally.examples
    assert example["expected"].startswith("200") and example["got"] == "timeout"
    assert DEV.device_id not in str(example)  # masked


def test_a_429_backs_the_device_off_and_is_no_violation() -> None:
    judge = _judge()
    answer = HttpResponse(429, {**IDS, "retry-after": "3"}, b"")
    assert judge.account(DEV, "first_claim", 0.0, 0.0, answer, None, 10.0) is None
    assert judge.not_before[DEV.index] == 13.0
    r = judge.flush()
    assert r.by_status == {"429": 1}
    assert sum(t.violations for t in r.checks.values()) == 0


def test_a_resend_may_get_the_first_answer_or_the_answer_to_a_repeat() -> None:
    judge = _judge()
    first = judge.expect_first(DEV)[0]
    repeat = HttpResponse(409, IDS, b"")
    send = Send("firmware_resend", b"", expect=first, alternative=None)
    judge.send(DEV, send, repeat)
    assert judge.results.checks["case_insensitive_id"].violations == 1
    again = Expectation(frozenset({409}), why="nonce reused")
    judge.send(DEV, Send("firmware_resend", b"", expect=first, alternative=again), repeat)
    assert judge.results.checks["case_insensitive_id"].evaluated == 2  # the second passed


def test_the_one_answer_of_a_half_answered_pair_is_judged() -> None:
    judge = _judge()
    pair = Pair("concurrent_duplicate", b"", PairExpectation(frozenset({(200, 409)}), False))
    judge.pair(DEV, pair, HttpResponse(500, IDS, b""), None)
    judge.pair(DEV, pair, None, HttpResponse(409, IDS, b""))
    tally = judge.results.checks["concurrent_retry"]
    assert (tally.evaluated, tally.violations) == (2, 1)
    assert tally.examples[0]["got"] == "status 500"


def test_the_judge_checks_tokens_against_the_servers_access_ttl() -> None:
    """A server issuing 60 s tokens: a judge told so passes them (fast check and pyjwt's
    cross-check), a judge left at v5's hour flags every one."""
    from harness.protocol import new_nonce, sign_claim
    from harness.server import EmbeddedServer, ServerConfig
    from tests.support.httpclient import Client

    config = ServerConfig(seed=FLEET.to_seed(), access_ttl_s=60)
    with EmbeddedServer(config) as server, Client(server.url) as client:
        bodies = []
        for _ in range(3):
            nonce = new_nonce()
            hmac_hex = sign_claim(DEV.device_id, DEV.child_id, nonce, DEV.oob, DEV.signing)
            reply = client.claim(DEV.body(nonce, hmac_hex))
            assert reply.status == 200, reply.body
            bodies.append(reply.body)
        secret = server.jwt_secret
    told = Judge(ServerProfile(), secret, [], token_verify_every=1, access_ttl_s=60)
    left = Judge(ServerProfile(), secret, [], token_verify_every=1)
    for judge in (told, left):
        for body in bodies:
            judge.check_token(DEV, "first_claim", body)
    good, bad = told.flush(), left.flush()
    assert good.tokens_cross_checked == 3 and good.token_signatures_verified == 3
    assert (good.checks["token_claims"].evaluated, good.checks["token_claims"].violations) == (3, 0)
    assert bad.checks["token_claims"].violations == 3
    assert bad.checks["token_claims"].examples[0]["got"] == "exp - iat = 60 s, expected 3600"


def test_a_verdict_from_beside_the_claims_reaches_the_series_and_the_observers() -> None:
    """The MQTT side judges through ``Judge.judged``: its violations are in the figures
    over time, the live metrics and the journal, as the claims' are."""
    seen: list[str] = []

    class Observer:
        def on_violation(self, check: str, example: object = None) -> None:
            seen.append(check)

    judge = Judge(ServerProfile(), None, [Observer()])
    judge.judged("token_refresh", True)
    judge.judged("token_refresh", False, {"device_id": "d***", "got": "401"})
    tally = judge.results.checks["token_refresh"]
    assert (tally.evaluated, tally.violations) == (2, 1)
    assert seen == ["token_refresh"]
    points = judge.series.to_dict()["points"]
    assert [p["violations"] for p in points] == [{"token_refresh": 1}]
