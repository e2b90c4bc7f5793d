"""The claim scenarios, each written once: its sends, what the oracle expects of each
send, and the answer the device acts on afterwards.

A scenario is a generator of steps (``Send``, ``Pair``, ``Wait``, ``Sign``). The
runner drives it over the network with callbacks, no task or coroutine per
episode (``harness.run.episodes``); compat's prediction drives the very same
generator with the oracle's answers (``predict``), so a measured and a predicted
column of the matrix come from one definition of what a device does.

The generator returns the status the device acts on (None: no HTTP status came
back); ``episode`` adds the firmware's own retries (the live path) after the
planned sends.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol

from harness.device import Device
from harness.oracle import (
    DeviceFacts,
    Expectation,
    PairExpectation,
    Sent,
    expect_concurrent,
    expect_send,
)
from harness.profiles import ServerProfile

# Labels of the firmware's own retries (harness.firmware): a fresh attempt, a resend.
LIVE_RETRY, LIVE_RESEND = "firmware_attempt", "firmware_resend"
RUN_OVER = -1  # what ``resend`` returns when the run ends before the device sends again
# What a scenario returns when its probe send (another or a corrupted HMAC, which no real
# firmware sends) got no answer: the firmware's resend would repeat the probe, not the
# claim, so the episode ends there, with no retries.
PROBE_LOST = -2


@dataclass(slots=True)
class Send:
    """One claim sent, judged on arrival.

    ``first``: the episode's first answer, judged under the device's own check
    (``harness.oracle.check_category``) with its cached expectation. Otherwise
    ``expect`` under ``check``; ``first_body`` is the answer a replay must repeat,
    and ``alternative`` a second acceptable expectation (a resend after silence:
    the server saw the first send or it did not).
    """

    label: str
    body: bytes
    first: bool = False
    check: str = ""
    expect: Expectation | None = None
    first_body: bytes | None = None
    alternative: Expectation | None = None


@dataclass(slots=True)
class Pair:
    """The same body twice, in flight together; judged as a pair."""

    label: str
    body: bytes
    expect: PairExpectation


@dataclass(slots=True)
class Wait:
    seconds: float


@dataclass(slots=True)
class Sign:
    """A fresh nonce signed by the device's own signer; answered with (nonce, hmac, body)."""


Step = Send | Pair | Wait | Sign
Play = Generator[Step, Any, "int | None"]


class Context(Protocol):
    """What a scenario asks of whoever drives it: the runner, or the prediction."""

    profile: ServerProfile

    def expect_first(self, dev: Device) -> Expectation: ...
    def registered(self, dev: Device) -> bool: ...
    def time_scale(self, dev: Device) -> float: ...
    def told_to_wait(self, dev: Device) -> bool: ...
    def wait_left(self, dev: Device) -> float: ...
    def ends_within(self, dev: Device, seconds: float) -> bool: ...
    def jitter(self) -> float: ...
    def attempted(self, dev: Device) -> None: ...
    def resent(self, dev: Device) -> None: ...
    def gave_up(self, dev: Device) -> None: ...


class Scenario:
    """A scenario: its name, the label of each send, and ``play``."""

    name = ""
    labels: tuple[str, ...] = ()

    @property
    def sends(self) -> int:
        return len(self.labels)

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        raise NotImplementedError


class FirstClaim(Scenario):
    """One claim with a fresh nonce (most of any fleet)."""

    name = "first_claim"
    labels = ("first_claim",)

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        r1 = yield Send(self.labels[0], body, first=True)
        return None if r1 is None else r1.status


class LostResponse(Scenario):
    """The device never saw the first answer: it waits and sends the very same body."""

    name = "lost_response"
    labels = ("lost_response", "retry_after_loss")

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        r1 = yield Send(self.labels[0], body, first=True)
        if r1 is None or r1.status >= 500:  # what the server recorded is unknown: stop
            return None if r1 is None else r1.status
        fw = dev.firmware
        if fw is not None and fw.resends:
            delay = fw.resend_delay_s * ctx.time_scale(dev)
        else:
            delay = dev.cohort.retry_delay
        if delay > 0:
            yield Wait(delay)
        exp = expect_send(ctx.profile, dev, "good", (Sent("good", r1.status),))
        r2 = yield Send(self.labels[1], body, check="idempotent_retry", expect=exp,
                        first_body=r1.body)  # fmt: skip
        return None if r2 is None else r2.status


class ConcurrentDuplicate(Scenario):
    """The same body twice at once (the v5 race); the device acts on the better answer."""

    name = "concurrent_duplicate"
    labels = ("concurrent_duplicate", "concurrent_duplicate")

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        exp = expect_concurrent(ctx.profile, dev, ctx.registered(dev))  # before its answers
        r1, r2 = yield Pair(self.labels[0], body, exp)
        if r1 is None or r2 is None:  # half answered: a 200 is still a 200 to the device
            got = r1 or r2
            return 200 if got is not None and got.status == 200 else None
        statuses = {r1.status, r2.status}
        return 200 if 200 in statuses else min(statuses - {409} or {409})


class ReplayOtherHmac(Scenario):
    """The same nonce again with another HMAC: a 409; the device acts on its own answer."""

    name = "replay_other_hmac"
    labels = ("replay_first", "replay_other_hmac")

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        r1 = yield Send(self.labels[0], body, first=True)
        if r1 is None or r1.status >= 500:
            return None if r1 is None else r1.status
        exp = expect_send(ctx.profile, dev, "other", (Sent("good", r1.status),))
        other = dev.body(nonce, os.urandom(32).hex())
        r2 = yield Send(self.labels[1], other, check="replay_conflict", expect=exp)
        return PROBE_LOST if r2 is None else r1.status


class BadHmacFirst(Scenario):
    """A corrupted HMAC first (it burns the nonce), then the corrected retry."""

    name = "bad_hmac_first"
    labels = ("bad_hmac", "corrected_retry")

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        profile = ctx.profile
        bad = ("0" if good[0] != "0" else "1") + good[1:]
        exp = expect_send(profile, dev, "bad")
        r1 = yield Send(self.labels[0], dev.body(nonce, bad), check="replay_conflict", expect=exp)
        if r1 is None or r1.status >= 500:
            return PROBE_LOST if r1 is None else r1.status
        exp = expect_send(profile, dev, "good", (Sent("bad", r1.status),))
        r2 = yield Send(self.labels[1], body, check="replay_conflict", expect=exp)
        return None if r2 is None else r2.status


class InvalidBody(Scenario):
    """A body validation refuses (``hmac_hex`` one digit short), then the right one with
    the same nonce: a 422 must not have burnt it."""

    name = "invalid_body"
    labels = ("invalid_body", "after_invalid_body")
    REFUSED = Expectation(frozenset({422}), why="validation: hmac_hex of 63 characters")

    def play(self, ctx: Context, dev: Device, nonce: str, good: str, body: bytes) -> Play:
        short = dev.body(nonce, good[:-1])
        r1 = yield Send(self.labels[0], short, check="validation", expect=self.REFUSED)
        if r1 is None or r1.status >= 500:
            return PROBE_LOST if r1 is None else r1.status
        r2 = yield Send(self.labels[1], body, first=True)
        return None if r2 is None else r2.status


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        FirstClaim(),
        LostResponse(),
        ConcurrentDuplicate(),
        ReplayOtherHmac(),
        BadHmacFirst(),
        InvalidBody(),
    )
}


def episode(
    ctx: Context, scenario: Scenario, dev: Device, nonce: str, good: str, body: bytes
) -> Play:
    """One planned episode, then, for a firmware with fresh attempts (the live path), its
    attempts until a 200 or until it gives up; returns the status the device ends on."""
    play = scenario.play(ctx, dev, nonce, good, body)
    last: Step | None = None  # the last send: a resend repeats it, and gets what it would
    value: Any = None
    while True:
        try:
            step = play.send(value)
        except StopIteration as stop:
            final = stop.value
            break
        if type(step) is Send:
            last = step
        value = yield step
    if final == PROBE_LOST:
        return None
    habits = dev.habits
    if habits is None or not habits.retries(final):
        return final
    return (yield from attempts(ctx, dev, final, body, last if type(last) is Send else None))


def attempts(
    ctx: Context, dev: Device, status: int | None, body: bytes, last: Send | None = None
) -> Play:
    """The device's own retries (its ``habits``; CONTRACT.md section 1, live path).

    While no HTTP status comes back, the same ``body`` again up to ``resends``
    times, ``resend_delay_s`` apart; after a failure its habits retry (the live
    path: any), a fresh attempt (new nonce) after ``1 s * 2^(n-1)`` +-25%
    (capped), ``attempts`` in all. A 429 is a failure that also waits out its
    Retry-After. It gives up when attempts run out on a failure it would retry.
    """
    fw = dev.habits
    assert fw is not None
    scale = ctx.time_scale(dev)
    attempt = 1
    while True:
        if status is None and not ctx.told_to_wait(dev):
            delay = fw.resend_delay_s * scale
            status = yield from resend(ctx, dev, body, fw.resends, delay, last)
            if status == RUN_OVER:
                return None
        if not fw.retries(status) or attempt >= fw.attempts:
            break
        wait = max(fw.backoff_s(attempt, ctx.jitter()) * scale, ctx.wait_left(dev))
        if ctx.ends_within(dev, wait):
            return status  # the run is over before the device would try again
        yield Wait(wait)
        attempt += 1
        ctx.attempted(dev)
        _, _, body = yield Sign()
        last = None  # a fresh attempt: its resends get what a first claim gets
        answer = yield Send(LIVE_RETRY, body, first=True)
        status = None
        if answer is not None:
            status = answer.status
        elif ctx.told_to_wait(dev):
            status = 429
    if fw.retries(status):
        ctx.gave_up(dev)
    return status


def resend(
    ctx: Context, dev: Device, body: bytes, times: int, delay: float, last: Send | None = None
) -> Play:
    """The same body again while no status comes back; the status, None, or ``RUN_OVER``.

    It gets what the unanswered send would have (``last``'s expectation, e.g. the 409 of
    a retry whose nonce a bad HMAC burnt), or, if that one reached the server, what a
    same-body retry gets."""
    if last is not None and not last.first and last.expect is not None:
        first = last.expect
    else:
        first = ctx.expect_first(dev)
    again = expect_send(ctx.profile, dev, "good", (Sent("good", min(first.statuses)),))
    for _ in range(times):
        if ctx.ends_within(dev, delay):
            return RUN_OVER  # the run is over before the device would send again
        yield Wait(delay)
        ctx.resent(dev)
        answer = yield Send(LIVE_RESEND, body, check="", expect=first, alternative=again)
        if answer is not None:
            return int(answer.status)
        if ctx.told_to_wait(dev):
            return 429
    return None


# --- the prediction: the same generators, answered by the oracle -------------------------


@dataclass(slots=True)
class _Predicted:
    status: int
    headers: dict[str, str]
    body: bytes = b""


class _Prediction:
    """A context with no clock, no network and no back-off: the oracle answers every send."""

    def __init__(self, profile: ServerProfile) -> None:
        self.profile = profile

    def expect_first(self, dev: DeviceFacts) -> Expectation:
        return expect_send(self.profile, dev)

    def registered(self, dev: DeviceFacts) -> bool:
        return False

    def time_scale(self, dev: DeviceFacts) -> float:
        return 0.0

    def told_to_wait(self, dev: DeviceFacts) -> bool:
        return False

    def wait_left(self, dev: DeviceFacts) -> float:
        return 0.0

    def ends_within(self, dev: DeviceFacts, seconds: float) -> bool:
        return False

    def jitter(self) -> float:
        return 0.0

    def attempted(self, dev: DeviceFacts) -> None:
        return None

    def resent(self, dev: DeviceFacts) -> None:
        return None

    def gave_up(self, dev: DeviceFacts) -> None:
        return None


_NONCE, _HMAC = "00" * 16, "0" * 64


def predict(profile: ServerProfile, dev: Device, scenario: str) -> str:
    """The status key the device ends an episode on, as the oracle answers each send
    (the lowest status each expectation allows)."""
    ctx = _Prediction(profile)
    play = episode(ctx, SCENARIOS[scenario], dev, _NONCE, _HMAC, b"")
    value: Any = None
    last = "none"
    while True:
        try:
            step = play.send(value)
        except StopIteration as stop:
            return last if stop.value is None else str(stop.value)
        if isinstance(step, Send):
            exp = ctx.expect_first(dev) if step.first else step.expect
            assert exp is not None
            value = _Predicted(min(exp.statuses), {})
            last = str(value.status)
        elif isinstance(step, Pair):
            a, b = min(step.expect.outcomes)
            value = (_Predicted(a, {}), _Predicted(b, {}))
            last = str(b)
        elif isinstance(step, Sign):
            value = (_NONCE, _HMAC, b"")
        else:
            value = None
