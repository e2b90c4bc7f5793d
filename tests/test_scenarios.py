"""Scenarios written once: what the oracle predicts from them is what a run measures."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from harness.compat import EpisodeOutcomes
from harness.flags import Flags
from harness.fleet import load_fleet, plan_episodes
from harness.profiles import ServerProfile
from harness.run import SoakOptions, run_soak_sync
from harness.scenarios import SCENARIOS, Pair, Send, Wait, predict
from tests.support import ROOT

SOAK = load_fleet(ROOT / "fleets" / "soak.toml").scaled(400)
IDEM_OFF, IDEM_ON = ServerProfile(), ServerProfile(flags=Flags(enable_idempotency=True))


def _provisioned() -> object:
    return next(d for d in SOAK.devices() if d.cohort.name == "mac-upper-legacy")


@pytest.mark.parametrize(
    ("scenario", "off", "on"),
    [
        ("first_claim", "200", "200"),
        ("lost_response", "409", "200"),  # the resend: a replay only with idempotency
        ("replay_other_hmac", "200", "200"),  # the device acts on its own first answer
        ("bad_hmac_first", "409", "409"),  # the bad HMAC burnt the nonce
        ("invalid_body", "200", "200"),  # a 422 burns nothing
        ("concurrent_duplicate", "200", "200"),
    ],
)
def test_each_scenario_predicts_the_answer_its_device_acts_on(
    scenario: str, off: str, on: str
) -> None:
    dev = _provisioned()
    assert predict(IDEM_OFF, dev, scenario) == off
    assert predict(IDEM_ON, dev, scenario) == on


def test_a_scenario_yields_its_labelled_sends_in_order() -> None:
    dev = _provisioned()
    play = SCENARIOS["lost_response"].play(_Context(), dev, "00" * 16, "0" * 64, b"body")
    first = next(play)
    assert isinstance(first, Send) and first.first and first.body == b"body"
    wait = play.send(_Reply(200))
    assert isinstance(wait, Wait) and wait.seconds == dev.cohort.retry_delay
    retry = play.send(None)
    assert isinstance(retry, Send) and retry.label == "retry_after_loss"
    assert retry.check == "idempotent_retry" and retry.expect is not None
    assert retry.expect.statuses == {409} and retry.first_body == b""
    with pytest.raises(StopIteration) as done:
        play.send(_Reply(409))
    assert done.value.value == 409
    pair = next(SCENARIOS["concurrent_duplicate"].play(_Context(), dev, "00" * 16, "0" * 64, b""))
    assert isinstance(pair, Pair) and pair.expect.outcomes == {(200, 409)}


@pytest.mark.parametrize("idempotency", [False, True], ids=["idem-off", "idem-on"])
def test_measured_outcomes_equal_the_prediction_in_every_count(idempotency: bool) -> None:
    """The soak fleet's every cohort and scenario at 50 lanes: the outcome each episode
    ends on, counted by the on_episode hook, is what the same scenarios predict."""
    flags = Flags(enable_idempotency=idempotency)
    profile = replace(ServerProfile(), flags=flags)
    predicted = Counter(
        predict(profile, SOAK.device(ep.device), ep.scenario) for ep in plan_episodes(SOAK, 800)
    )
    outcomes = EpisodeOutcomes()
    out = run_soak_sync(SoakOptions(fleet=SOAK, claims=800, flags=flags, observers=[outcomes]))
    assert out.info["concurrency"] == 50
    assert outcomes.outcomes == predicted
    assert len(predicted) >= 5  # 200, 401, 403, 404, 409, 422: the fleet's whole mix
    failed = {t.name for t in out.results.checks.values() if not t.passed}
    assert failed <= ({"concurrent_retry"} if idempotency else set())  # v5.0's race only


class _Reply:
    def __init__(self, status: int) -> None:
        self.status, self.headers, self.body = status, {}, b""


class _Context:
    profile = IDEM_OFF

    def registered(self, dev: object) -> bool:
        return False

    def time_scale(self, dev: object) -> float:
        return 1.0
