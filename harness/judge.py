"""The one judge: every claim accounted for exactly once, every answer checked by the oracle.

Soak, compat's measured columns and ``hil run`` (boards and virtual devices
alike) all count and judge through this class, so a claim means the same thing
in every report: one entry in ``RunResults`` (status
code, ``timeout`` or ``connection_error``), the per-answer checks (correlation
ID, the scenario's own expectation, token claims), and masked examples of what
broke. It holds no scheduling and does no I/O.

Token signatures are checked by ``FastTokenCheck`` (claims and HS256, one HMAC)
for every 200, in batches of one loop pass, with pyjwt's ``check_token`` as a
cross-check on every ``token_verify_every``-th token, because pyjwt alone costs
about as much as the rest of a claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from harness.device import Device
from harness.firmware import OUTAGE_STATUSES
from harness.masking import mask_id
from harness.oracle import (
    CORRELATION_HEADER,
    IDEMPOTENT_HEADER,
    Expectation,
    check_category,
    expect_send,
    judge_pair,
    judge_send,
)
from harness.profiles import ServerProfile
from harness.protocol import check_token
from harness.protocol.tokens import ACCESS_TTL
from harness.results import CONNECTION_ERROR, TIMEOUT, RunResults
from harness.scenarios import Pair, Send
from harness.series import IntervalSeries
from harness.storm import StormTracker

if TYPE_CHECKING:
    from harness.faults.phases import FaultJudge
from harness.token_check import FastTokenCheck
from harness.transport import HttpResponse, TransportTimeout

CROSS_CHECK_BATCH = 8  # tokens cross-checked by pyjwt together (_cross_checks)
DEFAULT_RETRY_AFTER_S = 1.0
_STATUS_KEYS = {code: str(code) for code in range(100, 600)}
_TOKEN_KEY = b'"access_token":'
# Counts in RunResults.extra (the server-counter cross-check reads them, harness.metrics).
EXTRA_KEYS = (
    "idempotent_replays",
    "auto_registered",
    "firmware_attempts",
    "firmware_resends",
    "firmware_gave_up",
)


class Observer(Protocol):
    """Hooks into a run (Prometheus metrics, progress, compat...). ``on_claim`` must be cheap."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_claim(
        self, scenario: str, status: str, latency_s: float, scheduled_latency_s: float | None
    ) -> None: ...
    def on_violation(self, check: str, example: dict[str, Any] | None = None) -> None: ...
    def on_episode(self, dev: Device, scenario: str, outcome: str) -> None: ...
    def on_finish(self, results: RunResults) -> None: ...


class RunObserver:
    """An ``Observer`` that ignores everything: subclass it and keep what you need."""

    def on_start(self, info: dict[str, Any]) -> None:
        """The run is about to start (``run_id``, ``fleet``, ``devices``, ``target``...)."""

    def on_claim(
        self,
        scenario: str,
        status: str,
        latency_s: float,
        scheduled_latency_s: float | None = None,
    ) -> None:
        """One claim was sent and answered, timed out or failed to connect."""

    def on_violation(self, check: str, example: dict[str, Any] | None = None) -> None:
        """A check was violated once (``example``: the masked example, as the report has)."""

    def on_episode(self, dev: Device, scenario: str, outcome: str) -> None:
        """A device's episode is over: the status key it acts on (``none``: nothing came)."""

    def on_finish(self, results: RunResults) -> None:
        """The run is over; ``results`` are final."""


def retry_after(value: str | None) -> float:
    """Retry-After in seconds (HTTP dates are not expected from a claim server)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


def status_key(status: int) -> str:
    return _STATUS_KEYS.get(status) or str(status)


def silence_key(error: BaseException | None) -> str:
    """The status key of a claim that got no HTTP answer."""
    return TIMEOUT if isinstance(error, TransportTimeout) else CONNECTION_ERROR


class Judge:
    """Accounting, verdicts, examples and token checks for one run (or one shard of it)."""

    def __init__(
        self,
        profile: ServerProfile,
        jwt_secret: str | None,
        observers: list[Any],
        token_verify_every: int = 100,
        check_refresh: bool = False,
        access_ttl_s: int = ACCESS_TTL,
    ) -> None:
        """``access_ttl_s``: the access-token lifetime the server issues (its exp - iat)."""
        self.profile = profile
        self.jwt_secret = jwt_secret
        self.observers = observers
        self.results = RunResults()
        self.results.extra.update(dict.fromkeys(EXTRA_KEYS, 0))  # counted: 0 is a figure too
        self.token_verify_every = token_verify_every
        # How to run the token batch once this loop pass is over: the run sets its loop's
        # call_soon. None: each token is checked at once (a judge used without a loop).
        self.schedule: Callable[[Callable[[], None]], Any] | None = None
        self.check_refresh = check_refresh  # the refresh token too (HIL: every token counts)
        self.fast_tokens = FastTokenCheck(jwt_secret, access_ttl_s=access_ttl_s)
        # The figures over time; the run's latency histograms are filled from its buckets.
        self.results.series = self.series = IntervalSeries()
        self.errors: list[BaseException] = []  # harness bugs found in a batch: the run raises
        # Devices told to wait by Retry-After, until when (the scheduler and scenarios read it).
        self.not_before: dict[int, float] = {}
        self.auto_registered: set[int] = set()
        self._first_expect: dict[Any, tuple[Expectation, str]] = {}
        self._pending_tokens: list[tuple[Any, str, bytes]] = []
        self._cross_pending: list[tuple[Any, str, object]] = []
        # Outages as the fleet saw them, and each reconnect storm (harness.storm).
        self.storm = StormTracker()
        # Claims in declared fault windows are judged by their rows (harness.faults.phases).
        self.faults: FaultJudge | None = None
        # Told of every 200's body (the MQTT side: a claimed device goes online with it).
        self.on_token: Callable[[Device, bytes], None] | None = None
        self._checks_correlation = self.results.checks["correlation_id"]
        self._checks_tokens = self.results.checks["token_claims"]

    # --- accounting ----------------------------------------------------------------------
    def account(
        self,
        dev: Device,
        label: str,
        due: float,
        start: float,
        response: HttpResponse | None,
        error: BaseException | None,
        end: float,
        send: Send | Pair | None = None,
    ) -> HttpResponse | None:
        """Record one sent claim (answered or failed at ``end``) exactly once and run the
        per-answer checks; None when the episode must stop (no answer, or told to back off).
        ``send``: the scenario's step (None: an episode's first send)."""
        if response is None:
            status = silence_key(error)
        else:
            status = _STATUS_KEYS.get(response.status) or str(response.status)
        latency = end - start
        from_schedule = end - due
        # RunResults.record_claim, with latencies buffered by HDR bucket (exactly equal).
        results = self.results
        results.sent += 1
        results.by_status[status] += 1
        results.by_scenario[(label, status)] += 1
        self.series.add(end, status, latency, from_schedule)
        for obs in self.observers:
            obs.on_claim(label, status, latency, from_schedule)
        faults = self.faults
        in_window = faults is not None and faults.claim(dev, label, send, response, status,
                                                         start, end)  # fmt: skip
        if response is None:
            self.storm.failed(dev.index, start)  # when it was sent: a timeout ends much later
            if not in_window:
                self.unanswered(dev, label, send, status)
            return None
        code = response.status
        if code < 500:
            if self.storm.watching:
                self.storm.answered(dev.index, start)
        elif code in OUTAGE_STATUSES:
            self.storm.failed(dev.index, start)
        if CORRELATION_HEADER in response.headers:
            self._checks_correlation.evaluated += 1
        elif self.profile.correlation_on(code):
            self.violation(
                "correlation_id", dev, label, "X-Correlation-Id header", f"{code} without it"
            )
        if code == 429:
            self.not_before[dev.index] = end + retry_after(response.headers.get("retry-after"))
            return None  # rate_limited: an outcome, not a violation; the device backs off
        if code == 200:
            self.check_token(dev, label, response.body)
            if self.on_token is not None:
                self.on_token(dev, response.body)
            if response.headers.get(IDEMPOTENT_HEADER, "").lower() == "true":
                results.extra["idempotent_replays"] += 1
        if code >= 500:
            return response  # judged, but what the server recorded is unknown
        if (
            not dev.provisioned
            and code not in (409, 422)  # a 429 returned above, before the server looked
            and self.profile.auto_registers(dev.norm_ids[0])
            and dev.index not in self.auto_registered
        ):
            self.auto_registered.add(dev.index)
            results.extra["auto_registered"] += 1
        return response

    def flush(self) -> RunResults:
        """The last batch's tokens checked and the latencies in; the results are final."""
        self.check_tokens()
        self.cross_checks()
        self.series.flush_into(self.results.latency, self.results.latency_scheduled)
        return self.results

    def count(self, key: str) -> None:
        """One more of ``RunResults.extra[key]`` (firmware attempts, devices that gave up)."""
        self.results.extra[key] += 1

    def retried(self, dev: Device, fresh: bool) -> None:
        """A device resent its claim (or, ``fresh``, made a new attempt) after a failure."""
        self.results.extra["firmware_attempts" if fresh else "firmware_resends"] += 1
        self.storm.retried(dev.index, fresh)

    def gave_up(self, dev: Device) -> None:
        """A device spent its attempts on failures it would have retried."""
        self.results.extra["firmware_gave_up"] += 1
        self.storm.gave_up(dev.index)

    # --- verdicts --------------------------------------------------------------------------
    def expect_first(self, dev: Device) -> tuple[Expectation, str]:
        """A device's first-send expectation and check, computed once per device."""
        # A board claims for one child after another under one index: its key has the child.
        key: Any = dev.index if dev.remote is None else (dev.index, dev.child_id)
        cached = self._first_expect.get(key)
        if cached is None:
            cached = (expect_send(self.profile, dev), check_category(dev))
            self._first_expect[key] = cached
        return cached

    def unanswered(self, dev: Device, label: str, send: Send | Pair | None, status: str) -> None:
        """A claim that got no HTTP answer violates the check its send belongs to.

        No profile predicts silence: an expected answer that never came (most of
        all an expected 200) is a failure of the run, never a pass by omission.
        """
        if send is None or (type(send) is Send and (send.first or not send.check)):
            exp, check = self.expect_first(dev)
            expected = exp.describe()
        else:
            check = send.check if type(send) is Send else "concurrent_retry"
            expected = "an HTTP answer"
        self.violation(check, dev, label, expected, status.replace("_", " "))

    def send(self, dev: Device, send: Send, response: HttpResponse) -> None:
        """Judge the answer a scenario's ``Send`` got."""
        if send.first:
            self.first(dev, response, send.label)
            return
        if self._window_judged(response):
            return
        check = send.check or self.expect_first(dev)[1]
        exp = send.expect
        assert exp is not None
        b = response.body
        problem = judge_send(exp, response.status, response.headers, b, send.first_body)
        if problem is not None and send.alternative is not None:
            other = judge_send(send.alternative, response.status, response.headers, b, None)
            if other is None:
                problem = None
            else:
                expected = f"{exp.describe()}; or, if the first arrived, "
                self.violation(check, dev, send.label, expected + send.alternative.describe(),
                               problem)  # fmt: skip
                return
        if problem is None:
            self.results.checks[check].evaluated += 1
        else:
            self.violation(check, dev, send.label, exp.describe(), problem)

    def first(self, dev: Device, response: HttpResponse, label: str) -> None:
        """An episode's first answer, under the device's own check; counted per cohort."""
        if not self._window_judged(response):
            exp, check = self.expect_first(dev)
            problem = judge_send(exp, response.status, response.headers, response.body, None)
            if problem is None:
                self.results.checks[check].evaluated += 1
            else:
                self.violation(check, dev, label, exp.describe(), problem)
        key = _STATUS_KEYS.get(response.status) or str(response.status)
        self.results.by_cohort[(dev.cohort.name, key)] += 1

    def pair(
        self, dev: Device, pair: Pair, r1: HttpResponse | None, r2: HttpResponse | None
    ) -> None:
        """Two concurrent answers; the one answer of a half-answered pair is still judged."""
        if self._window_judged(r1) | self._window_judged(r2):  # both looked up, always
            return
        exp = pair.expect
        if r1 is None or r2 is None:
            answered = r1 or r2
            if answered is not None:
                either = frozenset(code for codes in exp.outcomes for code in codes)
                one = Expectation(either, why=f"one of a concurrent pair: {exp.why}")
                problem = judge_send(one, answered.status, answered.headers, answered.body, None)
                if problem is None:
                    self.results.checks["concurrent_retry"].evaluated += 1
                else:
                    self.violation("concurrent_retry", dev, pair.label, one.describe(), problem)
            return
        problem = judge_pair(exp, (r1.status, r2.status), (r1.body, r2.body))
        if problem is None:
            self.results.checks["concurrent_retry"].evaluated += 1
        else:
            self.violation("concurrent_retry", dev, pair.label, exp.describe(), problem)

    def _window_judged(self, response: HttpResponse | None) -> bool:
        """Was this answer judged by its fault window's row already?"""
        faults = self.faults
        if faults is None or response is None or not faults.judged:
            return False
        key = id(response)
        if key in faults.judged:
            faults.judged.discard(key)
            return True
        return False

    def episode_over(self, dev: Device, cut: bool = False) -> None:
        """A device's episode ended (the fault checks need to know where it stopped);
        ``cut``: by the run's end, while it would still have tried again."""
        if self.faults is not None:
            self.faults.episode_over(dev, cut)

    def violation(self, name: str, dev: Device, label: str, expected: str, got: str) -> None:
        """Count one violation of check ``name`` with a masked example."""
        example = {
            "device_id": mask_id(dev.device_id),
            "cohort": dev.cohort.name,
            "scenario": label,
            "expected": expected,
            "got": got,
        }
        self.judged(name, False, example)

    def judged(self, name: str, ok: bool, example: dict[str, Any] | None = None) -> None:
        """One evaluation of ``name``, from the claims or beside them (the MQTT side): a
        violation reaches the series and every observer (metrics, journal) at once."""
        self.results.judged(name, ok, example)
        if not ok:
            self.series.violation(time.monotonic(), name)
            for obs in self.observers:
                obs.on_violation(name, example)

    # --- tokens ----------------------------------------------------------------------------
    def check_token(self, dev: Device, label: str, body: bytes) -> None:
        """Queue a 200's token for this loop pass's batch (checked before the run ends)."""
        pending = self._pending_tokens
        if not pending and self.schedule is not None:
            self.schedule(self.check_tokens)
        pending.append((dev, label, body))
        if self.schedule is None:
            self.check_tokens()

    def check_tokens(self) -> None:
        """Check the tokens of the 200s that arrived in one loop pass, back to back.

        Every token is still checked, with the same counts and examples, one loop
        pass later. Measured with the benchmark's null server, checking them in one
        batch instead of one at a time between the sends and receives cut the CPU per
        claim by about a tenth: the check's code and data stay in the CPU caches
        from one token to the next. A harness bug in a check stops the run loudly.
        """
        pending, self._pending_tokens = self._pending_tokens, []
        problems = self.fast_tokens.problems
        every = self.token_verify_every
        signed = self.fast_tokens.verifies_signatures
        checks = self._checks_tokens
        results = self.results
        try:
            for dev, label, body in pending:
                token = access_token(body)
                d, c = dev.norm_ids
                problem = problems(token, d, c)
                if problem is None and self.check_refresh:
                    problem = self._refresh_problem(body, d, c)
                results.tokens_checked += 1
                if signed:
                    results.token_signatures_verified += 1
                if problem is None and results.tokens_checked % every == 0:
                    cross = self._cross_pending
                    cross.append((dev, label, token))  # judged once pyjwt has seen it
                    if len(cross) >= CROSS_CHECK_BATCH:
                        self.cross_checks()
                elif problem is None:
                    checks.evaluated += 1
                else:
                    self.violation("token_claims", dev, label, "contract token claims", problem)
        except Exception as exc:
            self.errors.append(exc)

    def _refresh_problem(self, body: bytes, d: str, c: str) -> str | None:
        try:
            data = orjson.loads(body)
        except ValueError:
            return "200 body is not JSON"
        token = data.get("refresh_token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            return "refresh_token missing"
        problem = self.fast_tokens.problems(token, d, c, "refresh")
        return None if problem is None else f"refresh_token: {problem}"

    def cross_checks(self) -> None:
        """Tokens the fast check passed (every ``token_verify_every``-th), checked again
        by pyjwt's ``check_token``, ``CROSS_CHECK_BATCH`` at a time.

        pyjwt runs for one token in a hundred, so alone its code is out of the CPU
        caches every time: 160-190 µs per check in the running harness against about
        90 µs in isolation, and 130-140 µs in batches of 8 (three timed 3 s runs
        each), where all but the first run warm. Their verdicts count at the batch.
        """
        pending, self._cross_pending = self._cross_pending, []
        for dev, label, token in pending:
            self.results.tokens_cross_checked += 1
            text = token.decode("ascii") if isinstance(token, bytes) else str(token)
            # the fast check's rules: its leeway, the server's access-token lifetime
            fast = self.fast_tokens
            result = check_token(
                text, dev.device_id, dev.child_id, "access", self.jwt_secret, None,
                fast.leeway, fast.access_ttl_s,
            )  # fmt: skip
            if result.ok:
                self._checks_tokens.evaluated += 1
                continue
            # keep only what is wrong, not the values (device IDs)
            keys = sorted({p.split("=", 1)[0].split(":", 1)[0] for p in result.problems})
            problem = f"pyjwt check_token: {', '.join(keys)}"
            self.violation("token_claims", dev, label, "contract token claims", problem)


def access_token(body: bytes) -> object:
    """The access token of a 200 body: a plain find when compact (bytes, as the token check
    takes them), else full JSON parsing."""
    at = body.find(_TOKEN_KEY)
    if at >= 0 and body[at + 15 : at + 16] == b'"':
        end = body.find(b'"', at + 16)
        token = body[at + 16 : end]
        if end > 0 and b"\\" not in token:
            return token
    try:
        data = orjson.loads(body)
    except ValueError:
        return None
    return data.get("access_token") if isinstance(data, dict) else None
