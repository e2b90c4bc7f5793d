"""Episodes over the network: a scenario's steps driven by the connection's callbacks.

A scenario (``harness.scenarios``) is a generator; this module sends what it
yields, hands the answers to the judge, and resumes it with them, with no task
or coroutine per episode: a resumed generator costs well under a microsecond,
a task several (about 5 µs less CPU per claim, median of 16 A/B pairs on the
project's 2-core machine, when first claims moved to callbacks).

A plain first claim (most of any fleet) skips even the generator: its one send
and its judging are ``FirstClaim.play`` unrolled, because it is the hot path.

Answers are only timed and queued as they arrive; ``_answers_pass`` does the
bookkeeping of one loop pass's answers back to back and only then resumes the
episodes, whose sends make the system calls. That keeps the accounting's code
and data in the CPU caches: about 3 µs less CPU per claim, median of 14 A/B pairs.

Devices with a ``remote`` (a bench's boards) sign, and may claim, over their
serial bridge; those blocking calls run in the loop's default executor.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import Any

from harness.device import Device
from harness.firmware import OUTAGE_STATUSES
from harness.fleet.plan import Episode
from harness.judge import Judge, RunObserver, silence_key, status_key
from harness.protocol.signing import PrefixedHmac
from harness.scenarios import SCENARIOS, Pair, Send, Sign, Wait, attempts, episode
from harness.transport import HttpResponse, Transport, TransportError

LATE_START_S = 0.010  # a send starting later than this after its slot is a late start
SIGN_AHEAD = 64  # episodes whose first nonce, HMAC and body are made together (signed)

# An episode with its device, first nonce (hex), that nonce's good claim HMAC (hex) and
# the claim body carrying both (empty for a device that signs remotely).
Signed = tuple[Episode, Any, str, str, bytes]
Then = Callable[[int], None]  # then(device index): the lane or the open model goes on
_FIRST = SCENARIOS["first_claim"]
_FIRST_LABEL = _FIRST.labels[0]
# An episode that ended on one of these (the server down, not "no") holds its lane for the
# device's first back-off before the lane's next device: a fleet whose devices give up at
# once must not hammer a dead server from every lane.
PAUSE_KEYS = frozenset({"timeout", "connection_error", *map(str, OUTAGE_STATUSES)})


class _Running:
    """One episode in flight: its generator, device, when its next send is due, its end."""

    __slots__ = ("dev", "due", "ended", "gen", "last", "pair", "scenario", "then")

    def __init__(self, gen: Any, dev: Device, due: float, scenario: str, then: Then) -> None:
        self.gen = gen
        self.dev = dev
        self.due: float | None = due
        self.scenario = scenario
        self.then = then
        self.last = "none"  # the last send's status key
        self.ended = False  # then() was called: never twice
        self.pair: list[Any] = []


class EpisodeDriver:
    """Starts episodes, sends their claims, judges the answers through ``judge``."""

    def __init__(
        self,
        judge: Judge,
        transport: Transport,
        path: str,
        url: str,
        loop: asyncio.AbstractEventLoop,
        device: Callable[[int], tuple[Any, PrefixedHmac]],
        time_scale: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self.judge = judge
        self.profile = judge.profile
        self.transport = transport
        self.path = path
        self.url = url
        self.loop = loop
        self.device = device
        self.scale = time_scale
        self.deadline = deadline
        self.errors = judge.errors
        self.clock = time.monotonic
        self.stopped = False
        # Episodes waiting on a timer (a scenario's Wait, a Retry-After, a lane's pause):
        # ``stop`` ends them at once instead of letting the run wait out a 30 s back-off.
        self._timers: dict[_Running, asyncio.TimerHandle] = {}
        self._holding: set[int] = set()  # devices whose next retry falls after the deadline
        self._random = random.Random()
        self._answers: list[tuple[Any, ...]] = []
        # Observers that want each episode's outcome (compat); the others cost nothing.
        self._episode_observers = [
            o
            for o in judge.observers
            if getattr(type(o), "on_episode", RunObserver.on_episode) is not RunObserver.on_episode
        ]

    # --- signing ---------------------------------------------------------------------------
    def signed(self, episodes: Iterator[Episode]) -> Iterator[Signed]:
        """The episodes with their first nonce, claim HMAC and body, made ``SIGN_AHEAD`` at a time.

        Signing a batch in one tight loop, with one ``getrandom()`` for all its
        nonces, instead of one claim at a time between sends and receives, keeps the
        signing code and keys in the CPU caches. A nonce is still fresh and used
        once; it is made at most ``SIGN_AHEAD`` episodes before its send (milliseconds
        under load, longer at a low ``--rate``), which no server can tell: a claim
        carries no time.
        """
        device = self.device
        while True:
            batch = list(islice(episodes, SIGN_AHEAD))
            if not batch:
                return
            entropy = os.urandom(16 * len(batch))
            out: list[Signed] = []
            for i, ep in enumerate(batch):
                dev, mac = device(ep.device)
                raw = entropy[16 * i : 16 * i + 16]
                nonce = raw.hex()
                signer = dev.signer
                if signer is None:  # = hmac(oob, dev.message(nonce)), key schedule done once
                    good = mac.hexdigest(raw)
                else:  # e.g. the C signer the firmware uses, under load
                    good = signer.sign(dev.device_id, dev.child_id, nonce, dev.oob, dev.signing)
                out.append((ep, dev, nonce, good, dev.body(nonce, good)))
            yield from out

    def _sign(self, dev: Device) -> tuple[str, str, bytes]:
        """A fresh nonce signed by the device's own signer (the live path's fresh attempts)."""
        raw = os.urandom(16)
        nonce = raw.hex()
        if dev.signer is None:
            good = self.device(dev.index)[1].hexdigest(raw)
        else:
            good = dev.signer.sign(dev.device_id, dev.child_id, nonce, dev.oob, dev.signing)
        return nonce, good, dev.body(nonce, good)

    # --- starting an episode -----------------------------------------------------------------
    def by_callback(self, item: Signed) -> bool:
        """A plain first claim of a device not told to wait, with no retries of its own and
        nothing remote: sent without a generator (``_first_claim``)."""
        ep, dev = item[0], item[1]
        habits = dev.habits
        return (
            ep.scenario == "first_claim"
            and dev.firmware is None
            and dev.remote is None
            and (habits is None or habits.retry_on is not None or habits.attempts <= 1)
            and ep.device not in self.judge.not_before
        )

    def start(self, item: Signed, due: float, then: Then) -> None:
        """Start one episode due at ``due``; ``then(device)`` once it is over."""
        if self.by_callback(item):
            self._first_claim(item, due, then)
            return
        ep, dev, nonce, good, body = item
        run = _Running(None, dev, due, ep.scenario, then)
        wait_until = self.judge.not_before.get(ep.device)
        if wait_until is not None and wait_until > self.clock():  # told Retry-After
            run.due = max(due, wait_until)
            delay = wait_until - self.clock()  # the judge's clock (uvloop's loop.time differs)
            self._later(delay, run, self._prepare, nonce, good, body)
        else:
            self._prepare(run, nonce, good, body)

    def _prepare(self, run: _Running, nonce: str, good: str, body: bytes) -> None:
        """A board signs its claim first (over serial, in a thread); a virtual device's is
        signed already."""
        remote = run.dev.remote
        if remote is not None and remote.signs:
            self._remote(run, partial(remote.sign, run.dev), partial(self._signed_remotely, run))
        else:
            self._begin(run, nonce, good, body)

    def _signed_remotely(self, run: _Running, signed: tuple[str, str, bytes]) -> None:
        run.due = self.clock()  # the board's signing time is not a late start
        self._begin(run, *signed)

    def _begin(self, run: _Running, nonce: str, good: str, body: bytes) -> None:
        try:
            run.gen = episode(self, SCENARIOS[run.scenario], run.dev, nonce, good, body)
        except Exception as exc:  # a harness bug: stop the run loudly
            self._failed(run, exc)
            return
        self._step(run, None)

    def _first_claim(self, item: Signed, due: float, then: Then) -> None:
        dev, body = item[1], item[4]
        clock = self.clock
        start = self._start(due)

        def answered(response: HttpResponse | None, error: TransportError | None) -> None:
            answers = self._answers
            if not answers:
                self.loop.call_soon(self._answers_pass)
            answers.append((None, dev, due, start, clock(), response, error, then, body))

        self.transport.post_nowait(self.path, body, dev.headers, answered)

    # --- a scenario's steps --------------------------------------------------------------------
    def _step(self, run: _Running, value: Any) -> None:
        """Resume the episode with ``value``; do what it asks next, or end it. Whatever
        fails here (the scenario, the signer, the send) ends the run loudly, never hangs it."""
        try:
            try:
                step = run.gen.send(value)
            except StopIteration as stop:
                self._over(run, stop.value)
                return
            kind = type(step)
            if kind is Send:
                self._post(run, step, step.body)
            elif kind is Pair:  # both sends at once, due at the same moment
                run.pair = []
                due = run.due
                self._post(run, step, step.body)
                run.due = due
                self._post(run, step, step.body)
            elif kind is Wait:
                self._later(step.seconds, run, self._step, None)
            elif kind is Sign:
                dev = run.dev
                if dev.remote is not None and dev.remote.signs:
                    self._remote(run, partial(dev.remote.sign, dev), partial(self._step, run))
                else:
                    self._step(run, self._sign(dev))
            else:
                raise TypeError(f"scenario {run.scenario} yielded a {type(step).__name__}")
        except Exception as exc:  # a harness bug (or the signer's): stop the run loudly
            self._failed(run, exc)

    def _failed(self, run: _Running, exc: BaseException) -> None:
        self.errors.append(exc)
        self._end(run)

    def _post(self, run: _Running, send: Send | Pair, body: bytes) -> None:
        if self.stopped:
            self._end(run)
            return
        due = run.due if run.due is not None else self.clock()
        run.due = None  # the next send is due when it is made
        start = self._start(due)
        clock = self.clock

        def answered(response: HttpResponse | None, error: TransportError | None) -> None:
            answers = self._answers
            if not answers:
                self.loop.call_soon(self._answers_pass)
            answers.append((run, send, due, start, clock(), response, error, None, None))

        remote = run.dev.remote
        if remote is not None and remote.claims:
            self._remote(run, partial(remote.claim, self.url, run.dev), lambda r: answered(r, None),
                         failed=lambda e: answered(None, e))  # fmt: skip
        else:
            self.transport.post_nowait(self.path, body, run.dev.headers, answered)

    def _answers_pass(self) -> None:
        """Account for and judge one loop pass's answers, then resume their episodes."""
        batch, self._answers = self._answers, []
        judge = self.judge
        account = judge.account
        resume: list[tuple[_Running, Any]] = []
        for run, x, due, start, end, response, error, _, _ in batch:
            try:
                if run is None:  # a first claim by callback: x is its device
                    r1 = account(x, _FIRST_LABEL, due, start, response, error, end)
                    if r1 is not None:
                        judge.first(x, r1, _FIRST_LABEL)
                    continue
                dev = run.dev
                r = account(dev, x.label, due, start, response, error, end, x)
                key = status_key(response.status) if response is not None else silence_key(error)
                run.last = key
                if dev.remote is not None:
                    dev.remote.answered(key)
                if type(x) is Pair:
                    run.pair.append(r)
                    if len(run.pair) == 2:
                        judge.pair(dev, x, *run.pair)
                        resume.append((run, tuple(run.pair)))
                    continue
                if r is not None:
                    judge.send(dev, x, r)
                resume.append((run, r))
            except Exception as exc:  # a harness bug: stop the run loudly
                self.errors.append(exc)
                if run is not None:
                    resume.append((run, None))
        for answer in batch:  # the first claims' lanes go on
            if answer[0] is None:
                dev, then, response = answer[1], answer[7], answer[5]
                if (response is None or response.status in OUTAGE_STATUSES) and dev.habits:
                    self._first_failed(dev, response, answer[6], answer[8], then)
                    continue
                try:
                    if judge.faults is not None:
                        judge.episode_over(dev)
                    if self._episode_observers:
                        key = status_key(response.status) if response else silence_key(answer[6])
                        for obs in self._episode_observers:
                            obs.on_episode(dev, "first_claim", key)
                except Exception as exc:  # an observer's bug: stop the run loudly
                    self.errors.append(exc)
                try:
                    then(dev.index)
                except Exception as exc:
                    self.errors.append(exc)
        for run, value in resume:
            if self.stopped or self.errors:
                self._end(run)
            else:
                self._step(run, value)

    def flush(self) -> None:
        """The answers of the last loop pass, if it has not run yet (the run is ending)."""
        if self._answers:
            self._answers_pass()

    def _over(self, run: _Running, final: int | None) -> None:
        """The episode ended on ``final``: observers hear its outcome, a board runs its
        after-episode hook, and the lane goes on."""
        try:
            if self.judge.faults is not None:  # cut: the run ended before its next try
                self.judge.episode_over(run.dev, run.dev.index in self._holding)
            for obs in self._episode_observers:
                obs.on_episode(run.dev, run.scenario, run.last if final is None else str(final))
            remote = run.dev.remote
            if remote is not None and remote.after is not None:
                self._remote(run, remote.after, lambda _: self._end(run))
                return
        except Exception as exc:  # an observer's bug: stop the run loudly
            self.errors.append(exc)
        self._end(run)

    def _first_failed(
        self,
        dev: Device,
        response: HttpResponse | None,
        error: TransportError | None,
        body: bytes,
        then: Then,
    ) -> None:
        """A first claim by callback met the server down: the device's habits take over
        (resends, fresh attempts), or it gives up and its lane pauses (``_end``)."""
        run = _Running(None, dev, self.clock(), _FIRST.name, then)
        status = None if response is None else response.status
        run.last = status_key(status) if status is not None else silence_key(error)
        try:
            if self.stopped or self.errors or not dev.habits.retries(status):  # type: ignore[union-attr]
                self._over(run, status)
                return
            run.gen = attempts(self, dev, status, body)
        except Exception as exc:  # a harness bug: stop the run loudly
            self._failed(run, exc)
            return
        self._step(run, None)

    def _end(self, run: _Running) -> None:
        """The lane (or the open model) goes on, once per episode; after a failure that
        says the server is down, only after the device's first back-off."""
        if run.ended:
            return
        run.ended = True
        if run.gen is not None:
            run.gen.close()
        if not self.stopped and not self.errors:
            pause = 0.0
            habits = run.dev.habits
            if habits is not None and run.last in PAUSE_KEYS:
                pause = habits.backoff_s(1, self.jitter()) * self.time_scale(run.dev)
            if self.deadline is not None:
                # A device still backing off when the run ends holds its lane to the end (just
                # past it: the loop's timers may fire a millisecond early).
                left = self.deadline - self.clock() + 0.005
                pause = left if run.dev.index in self._holding else min(pause, left)
            if pause > 0:
                self._later(pause, run, self._then)
                return
        self._then(run)

    def _then(self, run: _Running) -> None:
        try:
            run.then(run.dev.index)
        except Exception as exc:
            self.errors.append(exc)

    def _later(self, delay: float, run: _Running, call: Callable[..., None], *args: Any) -> None:
        """``call(run, *args)`` after ``delay``, unless ``stop`` ends the run first."""
        self._timers[run] = self.loop.call_later(delay, self._fire, run, call, args)

    def _fire(self, run: _Running, call: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._timers.pop(run, None)
        call(run, *args)

    def stop(self) -> None:
        """Send nothing more: episodes waiting on a timer end now, those in flight end with
        their answers (or their timeout)."""
        self.stopped = True
        timers, self._timers = self._timers, {}
        for run, handle in timers.items():
            handle.cancel()
            if run.ended:
                self._then(run)
            else:
                self._end(run)

    def _remote(
        self,
        run: _Running,
        call: Callable[[], Any],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """A blocking call on a board (serial), in the executor; ``done`` with its result."""
        future = self.loop.run_in_executor(None, call)

        def finished(f: asyncio.Future[Any]) -> None:
            try:
                exc = f.exception()
                if exc is None:
                    done(f.result())
                elif failed is not None and isinstance(exc, TransportError):
                    failed(exc)
                else:  # the board failed: the bench records it; the episode ends here
                    remote = run.dev.remote
                    if remote is None or not remote.failed(exc):
                        self.errors.append(exc)  # not the board's failure: a harness bug
                    self._end(run)
            except Exception as bug:  # stop the run loudly
                self._failed(run, bug)

        future.add_done_callback(finished)

    def _start(self, due: float) -> float:
        """A send starts now: its start time, counted as a late start when past ``due``."""
        start = self.clock()
        if start - due > LATE_START_S:
            self.judge.results.late_starts += 1
        return start

    # --- what scenarios ask of their driver (harness.scenarios.Context) ---------------------
    def expect_first(self, dev: Device) -> Any:
        return self.judge.expect_first(dev)[0]

    def registered(self, dev: Device) -> bool:
        return dev.index in self.judge.auto_registered

    def time_scale(self, dev: Device) -> float:
        return dev.cohort.time_scale if self.scale is None else self.scale

    def told_to_wait(self, dev: Device) -> bool:
        return self.judge.not_before.get(dev.index, 0.0) > self.clock()

    def wait_left(self, dev: Device) -> float:
        return self.judge.not_before.get(dev.index, 0.0) - self.clock()

    def ends_within(self, dev: Device, seconds: float) -> bool:
        """Is the run over before ``dev`` would send again? Then it holds its lane to the
        end (``_end``): the device is still backing off, not free for another."""
        deadline = self.deadline
        if self.errors:
            return True
        over = deadline is not None and self.clock() + seconds >= deadline
        if over:
            self._holding.add(dev.index)
        return over

    def jitter(self) -> float:
        return self._random.uniform(-1.0, 1.0)

    def attempted(self, dev: Device) -> None:
        self.judge.retried(dev, True)

    def resent(self, dev: Device) -> None:
        self.judge.retried(dev, False)

    def gave_up(self, dev: Device) -> None:
        self.judge.gave_up(dev)
