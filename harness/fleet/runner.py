"""The soak runner: play the fleet's claim plan against a server and judge every answer.

Open model (``rate``: send ``i`` is due at ``t0 + i/rate`` whatever the server
does, so a stall shows up as latency from the scheduled time and as late
starts) or closed model (``concurrency`` workers, each waiting for its answer).
Every claim sent is recorded exactly once in ``RunResults`` (status code,
``timeout`` or ``connection_error``), and every answer is judged by the pure
oracle (``harness.oracle``) against the declared server profile.

The per-claim path avoids avoidable work: devices are built once and cached,
bodies are pre-formatted strings, no logging or pydantic, a first claim (most of
any fleet) runs as callbacks instead of a task (``_first_claim``), and token signatures
are checked by ``FastTokenCheck`` (claims and HS256 signature, one HMAC), with
pyjwt's ``check_token`` as a cross-check on every ``token_verify_every``-th
token, because pyjwt alone costs about as much as the rest of a claim.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.fleet.latency import LatencyBuffer
from harness.fleet.loader import load_fleet
from harness.fleet.model import Fleet, VirtualDevice
from harness.fleet.plan import SEND_LABELS, Episode, plan_episodes
from harness.fleet.tokens import FastTokenCheck
from harness.masking import mask_id
from harness.oracle import (
    CORRELATION_HEADER,
    IDEMPOTENT_HEADER,
    Expectation,
    Sent,
    check_category,
    expect_concurrent,
    expect_send,
    judge_pair,
    judge_send,
)
from harness.profiles import ServerProfile, declared_profile
from harness.protocol import check_token
from harness.protocol.claim import CLAIM_PATH
from harness.protocol.signing import PrefixedHmac
from harness.results import CONNECTION_ERROR, TIMEOUT, RunResults
from harness.shard import Shard, shard_indices
from harness.transport import (
    HttpResponse,
    TransportConnectionError,
    TransportError,
    TransportTimeout,
    make_transport,
)

if TYPE_CHECKING:
    from harness.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = "fleets/soak.toml"
DEFAULT_CLAIMS = 3000
DEFAULT_CONCURRENCY = 50
LATE_START_S = 0.010  # a send starting later than this after its slot is a late start
PROGRESS_FILE_S = 0.5  # how often a worker writes its running counts (harness.fleet.job)
MAX_IN_FLIGHT = 10_000  # open model: beyond this, arrivals wait (and count as late)
SIGN_AHEAD = 64  # episodes whose first nonce, HMAC and body are made together (_signed)
CROSS_CHECK_BATCH = 8  # tokens cross-checked by pyjwt together (_cross_checks)
DEFAULT_RETRY_AFTER_S = 1.0
# Closed model: episodes that may wait for their busy device before lanes stop taking more
# from the plan (a hot device then slows its lanes instead of growing the list).
DEFER_LIMIT = 1024


class RunObserver:
    """Hooks into a run (Prometheus metrics, progress...). ``on_claim`` must be cheap."""

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

    def on_violation(self, check: str) -> None:
        """A check was violated once."""

    def on_finish(self, results: RunResults) -> None:
        """The run is over; ``results`` are final."""


@dataclass(slots=True)
class SoakOptions:
    """Everything one soak run needs; the CLI is a thin layer that fills this in."""

    target: str | None = None  # None: start the embedded reference server
    claim_path: str = CLAIM_PATH
    fleet: Fleet | str | Path = DEFAULT_FLEET
    devices: int | None = None  # rescale the fleet to this many devices
    seed: int | None = None  # override the fleet's seed
    claims: int | None = None  # stop after this many claims (sends)...
    duration: float | None = None  # ...or after this many seconds (both: whichever first)
    rate: float | None = None  # open model: claims/s over the whole fleet (all shards)
    concurrency: int | None = None  # closed model: this many devices at once
    flags: Flags = field(default_factory=Flags)  # the configuration the server is declared to run
    keepalive: bool = False  # default: a fresh connection per claim, like the firmware
    timeout: float = 10.0
    shard: tuple[int, int] | None = None  # (index, count): run only this slice of devices
    observers: list[RunObserver] = field(default_factory=list)
    progress: bool = False
    progress_stream: IO[str] | None = None
    # --workers: this process's running counts go to this file every PROGRESS_FILE_S
    # (never per claim), and the parent prints the combined progress line.
    progress_file: str | None = None
    # Every 200's token is checked (claims, and HS256 signature when the secret is known);
    # every Nth is also cross-checked by pyjwt, which costs about 150 µs (two claims' worth):
    # 1 in 10 added about 15 µs to every claim, 1 in 100 adds 1.5 µs and still means
    # 1,000 pyjwt checks per 100,000 claims. The benchmark runs this same default.
    token_verify_every: int = 100
    # The server profile (harness.profiles): what the embedded server runs and what the
    # oracle is told a --target is. ``redis``: up, down-since-start or down-later (the
    # embedded server reproduces a declared outage with its in-memory store).
    profile: str | None = None  # None: the fleet file's, else v5.0
    environment: str | None = None  # None: the fleet file's, else production
    bare_router: bool = False
    redis: str = "up"
    atomic_idempotency: bool = False
    auto_register_secret: bytes | None = None
    server_mode: str = "thread"  # embedded server: "thread" or "process"
    # Multiplies the firmware's waits (resends, back-off) instead of each cohort's
    # time_scale; compat sets 0: outcomes do not depend on them.
    firmware_time_scale: float | None = None
    max_connections: int = 256
    run_id: str | None = None
    jwt_secret: str | None = None  # a --target's token secret, when known (signature checks)
    server_counters: bool = False  # scrape the target's /metrics v5 counters before and after
    # Who signs claims (harness.signer.Signer, e.g. CSigner); None: the inline Python HMAC.
    signer: Any = None


@dataclass(slots=True)
class SoakOutcome:
    """What a run produced: results plus what the report needs to say about the run."""

    results: RunResults
    info: dict[str, Any]
    # Counts the server-counter cross-check needs (harness.metrics EXTRA_* names).
    extra: dict[str, int] = field(default_factory=dict)
    # First sends per (cohort, status key): the per-cohort matrix compat prints.
    by_cohort: Counter[tuple[str, str]] = field(default_factory=Counter)
    token_signatures_verified: int = 0
    tokens_checked: int = 0
    # The target's v5 counters before and after the run (empty: not scraped / not served).
    server_before: dict[str, float] = field(default_factory=dict)
    server_after: dict[str, float] = field(default_factory=dict)
    tokens_cross_checked: int = 0  # also checked by pyjwt (harness.protocol.check_token)

    @property
    def passed(self) -> bool:
        return self.results.passed


def resolve_fleet_path(path: str | Path) -> Path:
    """A fleet path as given, else relative to the repository root (``fleets/soak.toml``)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    alt = ROOT / p
    return alt if alt.exists() else p


def prepare_fleet(options: SoakOptions) -> Fleet:
    fleet = options.fleet
    if not isinstance(fleet, Fleet):
        fleet = load_fleet(resolve_fleet_path(fleet))
    if options.seed is not None:
        fleet = fleet.with_seed(options.seed)
    if options.devices is not None:
        if options.devices < 1:
            raise HarnessInputError("--devices", f"must be at least 1, got {options.devices}")
        fleet = fleet.scaled(options.devices)
    return fleet


def validate_options(options: SoakOptions) -> None:
    """Bad combinations as one-line input errors, before anything starts."""
    if options.claims is not None and options.claims < 1:
        raise HarnessInputError("--claims", f"must be at least 1, got {options.claims}")
    if options.duration is not None and options.duration <= 0:
        raise HarnessInputError("--duration", f"must be positive, got {options.duration}")
    if options.rate is not None and options.rate <= 0:
        raise HarnessInputError("--rate", f"must be positive, got {options.rate}")
    if options.concurrency is not None and options.concurrency < 1:
        raise HarnessInputError("--concurrency", f"must be at least 1, got {options.concurrency}")
    if options.rate is not None and options.concurrency is not None:
        raise HarnessInputError("--rate", "give --rate (open model) or --concurrency, not both")
    if options.timeout <= 0:
        raise HarnessInputError("--timeout", f"must be positive, got {options.timeout}")
    if options.token_verify_every < 1:
        raise HarnessInputError("token_verify_every", "must be at least 1")
    if not options.claim_path.startswith("/"):
        raise HarnessInputError("--claim-path", f"must start with /, got {options.claim_path!r}")
    if options.shard is not None:
        Shard(*options.shard)  # raises the one-line --shard error


def server_profile(options: SoakOptions, fleet: Fleet) -> ServerProfile:
    """The declared server profile of a run: the options, else the fleet file's, else v5.0."""
    return declared_profile(
        options.flags,
        options,
        default_name=fleet.profile,
        default_environment=fleet.environment,
    )


def embedded_config(options: SoakOptions, fleet: Fleet) -> ServerConfig:
    """The embedded reference server's ``ServerConfig`` for a run: the declared profile,
    seeded with the fleet's rows."""
    from harness.server.config import ServerConfig

    return ServerConfig.running(server_profile(options, fleet), fleet.to_seed())


async def run_soak(options: SoakOptions) -> SoakOutcome:
    """Run one soak (or one shard of it) and return the judged results."""
    validate_options(options)
    fleet = prepare_fleet(options)
    if options.claims is None and options.duration is None:
        options.claims = DEFAULT_CLAIMS
    profile = server_profile(options, fleet)
    if options.target is not None:
        return await _Run(options, fleet, profile, options.target, options.jwt_secret).run()
    from harness.server.embedded import EmbeddedServer

    server = EmbeddedServer(embedded_config(options, fleet), mode=options.server_mode)  # type: ignore[arg-type]
    async with server:
        return await _Run(options, fleet, profile, server.url, server.jwt_secret).run()


class _Run:
    """One run's state: the devices in use, the transport, results and observers."""

    def __init__(
        self,
        options: SoakOptions,
        fleet: Fleet,
        profile: ServerProfile,
        url: str,
        jwt_secret: str | None,
    ) -> None:
        self.o = options
        self.fleet = fleet
        self.profile = profile
        self.url = url
        self.jwt_secret = jwt_secret
        self.results = RunResults()
        self.observers = list(options.observers)
        self.path = options.claim_path
        self._devices: dict[int, tuple[VirtualDevice, PrefixedHmac]] = {}
        self._first_expect: dict[int, tuple[Expectation, str]] = {}
        self._not_before: dict[int, float] = {}
        self._auto_registered: set[int] = set()
        self.replays = 0
        self.firmware_attempts = 0  # fresh attempts the firmware made after a failure
        self.firmware_gave_up = 0  # episodes whose device gave up (attempts exhausted)
        self._jitter = random.Random()
        self.by_cohort: Counter[tuple[str, str]] = Counter()
        self.tokens_checked = 0
        self.signatures_checked = 0
        self.tokens_cross_checked = 0
        self.fast_tokens = FastTokenCheck(jwt_secret)
        self.signer = options.signer
        self.latency = LatencyBuffer()
        self.checks_correlation = self.results.checks["correlation_id"]
        self.checks_tokens = self.results.checks["token_claims"]
        self.latency_scheduled = LatencyBuffer()
        self.errors: list[BaseException] = []
        # 200s whose token is checked in this loop pass's batch (see _check_tokens).
        self._pending_tokens: list[tuple[VirtualDevice, str, bytes]] = []
        # Tokens the fast check passed, waiting for pyjwt's cross-check (_cross_checks).
        self._cross_pending: list[tuple[VirtualDevice, str, object]] = []
        # First-claim answers that arrived in this loop pass (see _first_answers).
        self._answers: list[_Answer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Closed model (_closed_model): the signed episodes, lanes still running, their end.
        self._queue: Iterator[Signed] = iter(())
        self._lanes = 0
        self._lanes_done: asyncio.Future[None] | None = None
        self._tasks: dict[asyncio.Task[None], int] = {}  # lanes' _episode coroutines: device
        self._busy: set[int] = set()  # closed model: devices with an episode in flight
        self._deferred: list[Signed] = []  # episodes waiting for their busy device
        self._parked = 0  # lanes waiting for a device to come free
        self.clock = time.monotonic
        self.run_id = options.run_id or uuid.uuid4().hex[:12]
        self.info: dict[str, Any] = {}

    # --- the run ---------------------------------------------------------------------
    async def run(self) -> SoakOutcome:
        o = self.o
        shard = Shard(*o.shard) if o.shard is not None else Shard()
        owned = shard_indices(len(self.fleet), shard)  # a range: membership is O(1)
        episodes = plan_episodes(
            self.fleet, o.claims, None if shard.is_whole else owned.__contains__
        )
        wanted = o.concurrency or DEFAULT_CONCURRENCY
        lanes = None if o.rate is not None else min(wanted, max(len(owned), 1))
        self.info = {
            "run_id": self.run_id,
            "fleet": self.fleet.name,
            "fleet_source": self.fleet.source,
            "seed": self.fleet.seed,
            "devices": len(owned),
            "fleet_devices": len(self.fleet),
            "target": o.target or "embedded",
            "url": self.url,
            "claim_path": self.path,
            "flags": self.profile.flags.to_env(),
            "profile": self.profile.to_dict(),
            "atomic_idempotency": self.profile.atomic_idempotency,
            "model": "open" if o.rate is not None else "closed",
            "rate": o.rate,
            "concurrency": lanes,
            "claims_planned": o.claims,
            "duration_planned_s": o.duration,
            "connection": "keepalive" if o.keepalive else "fresh",
            "shard": str(shard) if o.shard else None,
            "token_verify_every": o.token_verify_every,
            "token_signatures": "all" if self.jwt_secret else "secret unknown: claims only",
        }
        if lanes is not None and lanes < wanted:  # a device has one claim in flight
            self.info["concurrency_capped_from"] = wanted
        for obs in self.observers:
            obs.on_start(self.info)
        self.transport = make_transport(
            self.url,
            mode="keepalive" if o.keepalive else "fresh",
            timeout=o.timeout,
            max_connections=o.max_connections,
        )
        before: dict[str, float] = {}
        if o.server_counters:
            from harness.metrics import scrape_server_counters

            before = await asyncio.to_thread(scrape_server_counters, self.url)
        progress = None
        if o.progress:
            progress = asyncio.create_task(self._progress(o.progress_stream or sys.stderr))
        counts_path = o.progress_file
        counts_writer = None
        if counts_path:
            counts_writer = asyncio.create_task(self._write_counts(counts_path))
        self._loop = asyncio.get_running_loop()
        start = self.clock()
        self.deadline = None if o.duration is None else start + o.duration
        try:
            signed = self._signed(episodes)
            if o.rate is not None:
                await self._open_model(signed, o.rate, start)
            else:
                await self._closed_model(signed, lanes or 1)
        finally:
            self.results.duration_s = self.clock() - start
            self._first_answers()  # the last pass's answers and tokens, if not done yet
            self._check_tokens()
            self._cross_checks()
            self.latency.flush_into(self.results.latency)
            self.latency_scheduled.flush_into(self.results.latency_scheduled)
            if progress is not None:
                progress.cancel()
            if counts_writer is not None and counts_path:
                counts_writer.cancel()
                write_counts(counts_path, self.results)
            await self.transport.aclose()
        if self.errors:
            raise self.errors[0]
        after: dict[str, float] = {}
        if o.server_counters:
            after = await asyncio.to_thread(scrape_server_counters, self.url)
        for obs in self.observers:
            obs.on_finish(self.results)
        return SoakOutcome(
            self.results,
            self.info,
            {
                "idempotent_replays": self.replays,
                "auto_registered": len(self._auto_registered),
                "firmware_attempts": self.firmware_attempts,
                "firmware_gave_up": self.firmware_gave_up,
            },
            self.by_cohort,
            self.signatures_checked,
            self.tokens_checked,
            before,
            after,
            self.tokens_cross_checked,
        )

    def _signed(self, episodes: Iterator[Episode]) -> Iterator[Signed]:
        """The episodes with their first nonce, claim HMAC and body, made ``SIGN_AHEAD`` at a time.

        Signing a batch in one tight loop, with one ``getrandom()`` for all its
        nonces, instead of one claim at a time between sends and receives, keeps the
        signing code and keys in the CPU caches. A nonce is still fresh and used
        once; it is made at most ``SIGN_AHEAD`` episodes before its send (milliseconds
        under load, longer at a low ``--rate``), which no server can tell: a claim
        carries no time.
        """
        signer = self.signer
        device = self._device
        while True:
            batch = list(islice(episodes, SIGN_AHEAD))
            if not batch:
                return
            entropy = os.urandom(16 * len(batch))
            signed: list[Signed] = []
            for i, ep in enumerate(batch):
                dev, mac = device(ep.device)
                raw = entropy[16 * i : 16 * i + 16]
                nonce = raw.hex()
                if signer is None:  # = hmac(oob, dev.message(nonce)), key schedule done once
                    good = mac.hexdigest(raw)
                else:  # e.g. the C signer the firmware uses, under load
                    good = signer.sign(dev.device_id, dev.child_id, nonce, dev.oob, dev.signing)
                signed.append((ep, dev, nonce, good, dev.body(nonce, good)))
            yield from signed

    async def _closed_model(self, episodes: Iterator[Signed], workers: int) -> None:
        """``workers`` lanes, each starting the next episode when its last one is over.

        A first claim (most of any fleet, all of the benchmark's) runs as callbacks:
        ``_first_claim`` takes its answer from the connection's callback,
        ``_first_answers`` accounts for and judges the loop pass's answers and
        starts the lanes' next episodes, with no task or coroutine per claim (about
        5 µs less CPU per claim, median of 16 A/B pairs on the project's 2-core
        machine). Every other episode runs as the ``_episode`` coroutine, as do
        first claims of devices told to wait by Retry-After.
        """
        loop = asyncio.get_running_loop()
        self._queue = episodes
        self._lanes = workers
        self._lanes_done = loop.create_future()
        try:
            for _ in range(workers):
                self._next_episode()
            await self._lanes_done
        finally:
            # Only when cancelled is anything left: answers still in flight (failed by
            # the transport's aclose) must not start new episodes.
            self._queue = iter(())
            self._deferred.clear()
            for task in list(self._tasks):
                task.cancel()

    def _next_episode(self) -> None:
        """A closed-model lane is free: start its next episode, park it, or end it.

        A device has one claim attempt in flight, as a real one does: an episode
        whose device is busy in another lane waits (``_deferred``) and starts when
        that device's episode is over, before any episode after it in the plan. A
        lane with nothing startable while episodes wait parks (``_parked``) until a
        device comes free, so waiting never ends a lane early.
        """
        try:
            now = self.clock()
            running = not self.errors and (self.deadline is None or now < self.deadline)
            item = self._startable() if running else None
            if item is not None:
                self._launch(item, now)
                return
            if running and self._deferred:
                self._parked += 1
                return
        except Exception as exc:  # a harness bug (or the signer's): stop the run loudly
            self.errors.append(exc)
        self._lanes -= 1
        if self._lanes <= 0 and not self._lanes_done.done():
            self._lanes_done.set_result(None)

    def _by_callback(self, item: Signed) -> bool:
        """Does this episode run as callbacks (``_first_claim``)? A plain first claim of a
        device that was not told to wait and whose firmware makes no retries of its own."""
        ep = item[0]
        return (
            ep.scenario == "first_claim"
            and ep.device not in self._not_before
            and item[1].firmware is None
        )

    def _launch(self, item: Signed, now: float) -> None:
        ep = item[0]
        self._busy.add(ep.device)
        if self._by_callback(item):
            self._first_claim(item, now, self._lane_free)
        else:
            task = self._loop.create_task(self._guarded(item, now))  # type: ignore[union-attr]
            self._tasks[task] = ep.device
            task.add_done_callback(self._episode_over)

    def _startable(self) -> Signed | None:
        """The next episode whose device is not in flight: a deferred one first, else the
        plan's next (deferring those whose device is busy)."""
        busy = self._busy
        deferred = self._deferred
        if deferred:
            for i, item in enumerate(deferred):
                if item[0].device not in busy:
                    del deferred[i]
                    return item
        queue = self._queue
        while len(deferred) < DEFER_LIMIT:
            item = next(queue, None)
            if item is None or item[0].device not in busy:
                return item
            deferred.append(item)
        return None  # enough waiting: the lane parks until a device comes free

    def _lane_free(self, device: int) -> None:
        """A lane's episode is over: it goes on, and parked lanes wake while there is work
        for them (or end, once none will come)."""
        self._busy.discard(device)
        self._next_episode()
        while self._parked:
            self._parked -= 1
            parked = self._parked
            self._next_episode()
            if self._parked > parked:  # it parked again: nothing startable yet
                break

    def _episode_over(self, task: asyncio.Task[None]) -> None:
        """An ``_episode`` task of a lane ended; its failure is in ``errors`` already."""
        device = self._tasks.pop(task, None)
        if task.cancelled():
            return
        task.exception()  # retrieved: _guarded recorded it and the run raises it
        if device is not None:
            self._lane_free(device)

    async def _open_model(self, episodes: Iterator[Signed], rate: float, start: float) -> None:
        """Start episode ``i`` at ``start + first_send/rate``; first claims as callbacks
        (``_first_claim``, as in the closed model), every other episode as a task. An
        episode due while its device still has one in flight starts when that one is over
        (a late start), as a real device cannot claim twice at once."""
        t0 = start
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        callbacks = 0  # first claims sent as callbacks and not answered yet
        drained: asyncio.Future[None] | None = None

        waiting: dict[int, list[tuple[Signed, float]]] = {}  # episodes of busy devices
        busy = self._busy

        def launch(item: Signed, due: float) -> None:
            nonlocal callbacks
            busy.add(item[0].device)
            if self._by_callback(item):
                callbacks += 1
                self._first_claim(item, due, answered)
                return
            task = asyncio.create_task(one(item, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def freed(device: int) -> None:
            """A device's episode is over: its next due episode starts (late, counted)."""
            queue = waiting.get(device)
            if queue:
                launch(*queue.pop(0))
                if not queue:
                    del waiting[device]
            else:
                busy.discard(device)

        async def one(item: Signed, due: float) -> None:
            try:
                await self._guarded(item, due)
            finally:
                slots.release()
                freed(item[0].device)

        def answered(device: int) -> None:
            nonlocal callbacks
            slots.release()
            freed(device)
            callbacks -= 1
            if callbacks == 0 and drained is not None and not drained.done():
                drained.set_result(None)

        for item in episodes:
            ep = item[0]
            due = t0 + ep.first_send / rate
            if self.errors or (self.deadline is not None and due >= self.deadline):
                break
            delay = due - self.clock()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            await slots.acquire()
            if ep.device in busy:  # one claim attempt in flight per device, as a real one
                waiting.setdefault(ep.device, []).append((item, due))
                continue
            launch(item, due)
        while tasks or waiting:
            if tasks:
                await asyncio.gather(*list(tasks))
            else:  # only callbacks left; their answers start what waits
                await asyncio.sleep(0.001)
        if callbacks:
            drained = loop.create_future()
            await drained

    async def _guarded(self, item: Signed, due: float) -> None:
        try:
            await self._episode(item, due)
        except Exception as exc:  # a harness bug: stop the run loudly, not silently
            self.errors.append(exc)
            raise

    # --- one episode ---------------------------------------------------------------------
    def _device(self, index: int) -> tuple[VirtualDevice, PrefixedHmac]:
        """A device and its claim HMAC with the key and the signed IDs absorbed, built once."""
        entry = self._devices.get(index)
        if entry is None:
            dev = self.fleet.device(index)
            entry = self._devices[index] = (dev, PrefixedHmac(dev.oob, dev.message("")))
        return entry

    async def _episode(self, item: Signed, due: float) -> None:
        """One planned episode, then, for a firmware with fresh attempts (the live path),
        its attempts until a 200 or until it gives up."""
        final = await self._play(item, due)
        dev = item[1]
        if dev.firmware is not None and dev.firmware.attempts > 1 and final != 200:
            await self._attempts(dev, final, item[4])

    async def _play(self, item: Signed, due: float) -> int | None:
        """The episode's sends; returns the status the device acts on (None: none came)."""
        ep, dev, nonce, good, body = item
        wait_until = self._not_before.get(ep.device)
        if wait_until is not None:  # the server said Retry-After to this device
            delay = wait_until - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            due = max(due, wait_until)
        labels = SEND_LABELS[ep.scenario]
        scenario = ep.scenario
        profile = self.profile

        if scenario == "concurrent_duplicate":
            registered = dev.index in self._auto_registered  # before this pair's answers
            r1, r2 = await asyncio.gather(
                self._send(dev, labels[0], body, due), self._send(dev, labels[1], body, due)
            )
            if r1 is None or r2 is None:  # the one answer that came is still judged
                answered = r1 or r2
                if answered is not None:
                    pair = expect_concurrent(profile, dev, registered)
                    either = frozenset(code for codes in pair.outcomes for code in codes)
                    exp = Expectation(either, why=f"one of a concurrent pair: {pair.why}")
                    self._judge(dev, "concurrent_retry", exp, answered, None, labels[0])
                return None
            self._after_pair(dev, r1, r2, registered)
            statuses = {r1.status, r2.status}
            return 200 if 200 in statuses else min(statuses - {409} or {409})

        if scenario == "invalid_body":
            # A body the server's validation refuses (hmac_hex one digit short), then the
            # right one with the same nonce: a 422 must not have burnt it.
            r1 = await self._send(dev, labels[0], dev.body(nonce, good[:-1]), due)
            if r1 is None:
                return None
            exp = Expectation(frozenset({422}), why="validation: hmac_hex of 63 characters")
            self._judge(dev, "validation", exp, r1, None, labels[0])
            if r1.status >= 500:
                return r1.status
            r2 = await self._send(dev, labels[1], body, self.clock())
            if r2 is None:
                return None
            self._judge_first(dev, r2, labels[1])
            return r2.status

        if scenario == "bad_hmac_first":
            bad = ("0" if good[0] != "0" else "1") + good[1:]
            r1 = await self._send(dev, labels[0], dev.body(nonce, bad), due)
            if r1 is None:
                return None
            exp = expect_send(profile, dev, "bad")
            self._judge(dev, "replay_conflict", exp, r1, None, labels[0])
            if r1.status >= 500:  # what the server recorded is unknown: stop here
                return r1.status
            r2 = await self._send(dev, labels[1], body, self.clock())
            if r2 is None:
                return None
            exp = expect_send(profile, dev, "good", (Sent("bad", r1.status),))
            self._judge(dev, "replay_conflict", exp, r2, None, labels[1])
            return r2.status

        r1 = await self._send(dev, labels[0], body, due)
        if r1 is None:
            return None
        self._judge_first(dev, r1, labels[0])
        if scenario == "first_claim" or r1.status >= 500:
            return r1.status
        history = (Sent("good", r1.status),)
        if scenario == "lost_response":
            # The device never saw r1: it waits and sends the very same body again.
            fw = dev.firmware
            if fw is not None and fw.resends:
                delay = fw.resend_delay_s * self._time_scale(dev)
            else:
                delay = dev.cohort.retry_delay
            if delay > 0:
                await asyncio.sleep(delay)
            r2 = await self._send(dev, labels[1], body, self.clock())
            if r2 is None:
                return None
            exp = expect_send(profile, dev, "good", history)
            self._judge(dev, "idempotent_retry", exp, r2, r1.body, labels[1])
            return r2.status
        # replay_other_hmac: same nonce, another HMAC (the device acts on its own answer)
        other = os.urandom(32).hex()
        r2 = await self._send(dev, labels[1], dev.body(nonce, other), self.clock())
        if r2 is None:
            return None
        exp = expect_send(profile, dev, "other", history)
        self._judge(dev, "replay_conflict", exp, r2, None, labels[1])
        return r1.status

    def _time_scale(self, dev: VirtualDevice) -> float:
        scale = self.o.firmware_time_scale
        return dev.cohort.time_scale if scale is None else scale

    async def _attempts(self, dev: VirtualDevice, status: int | None, body: bytes) -> None:
        """The firmware's own retries (CONTRACT.md section 1, live path): while no HTTP status
        comes back, the same ``body`` again up to ``resends`` times, ``resend_delay_s`` apart;
        after any failure a fresh attempt (new nonce) after ``1 s * 2^(n-1)`` +-25% (capped),
        ``attempts`` in all. Every send is judged. A 429 is a failure that also waits out its
        Retry-After."""
        fw = dev.firmware
        assert fw is not None
        scale = self._time_scale(dev)
        attempt = 1
        while True:
            if status is None and not self._told_to_wait(dev):
                status = await self._resend(dev, body, fw.resends, fw.resend_delay_s * scale)
            if status == 200 or attempt >= fw.attempts:
                break
            wait = fw.backoff_s(attempt, self._jitter.uniform(-1.0, 1.0)) * scale
            wait = max(wait, self._not_before.get(dev.index, 0.0) - self.clock())
            if self.errors or (self.deadline is not None and self.clock() + wait >= self.deadline):
                return  # the run is over before the device would try again
            await asyncio.sleep(wait)
            attempt += 1
            self.firmware_attempts += 1
            raw = os.urandom(16)
            nonce = raw.hex()
            if self.signer is None:
                good = self._device(dev.index)[1].hexdigest(raw)
            else:
                good = self.signer.sign(dev.device_id, dev.child_id, nonce, dev.oob, dev.signing)
            body = dev.body(nonce, good)
            answer = await self._send(dev, LIVE_RETRY, body, self.clock())
            status = None
            if answer is not None:
                self._judge_first(dev, answer, LIVE_RETRY)
                status = answer.status
            elif self._told_to_wait(dev):
                status = 429
        if status != 200:
            self.firmware_gave_up += 1

    def _told_to_wait(self, dev: VirtualDevice) -> bool:
        """The last answer was a 429 (``_account`` returned None and set a Retry-After)."""
        return self._not_before.get(dev.index, 0.0) > self.clock()

    async def _resend(
        self, dev: VirtualDevice, body: bytes, times: int, delay: float
    ) -> int | None:
        """The same body again while no status comes back; the status, or None."""
        for _ in range(times):
            await asyncio.sleep(delay)
            answer = await self._send(dev, LIVE_RESEND, body, self.clock())
            if answer is not None:
                self._judge_resent(dev, answer)
                return answer.status
            if self._told_to_wait(dev):
                return 429
        return None

    def _judge_resent(self, dev: VirtualDevice, answer: HttpResponse) -> None:
        """A body resent after no answer: the server saw the first send or it did not, so
        either the first answer or the answer to a repeat (a replay, with its header) holds."""
        check = check_category(dev)
        first = expect_send(self.profile, dev)
        again = expect_send(self.profile, dev, "good", (Sent("good", min(first.statuses)),))
        for exp in (first, again):
            if judge_send(exp, answer.status, answer.headers, answer.body, None) is None:
                self.results.checks[check].evaluated += 1
                return
        expected = f"{first.describe()}; or, if the first arrived, {again.describe()}"
        got = judge_send(first, answer.status, answer.headers, answer.body, None) or ""
        self._violation(check, dev, LIVE_RESEND, expected, got)

    def _expect_first(self, dev: VirtualDevice) -> tuple[Expectation, str]:
        cached = self._first_expect.get(dev.index)
        if cached is None:
            cached = (expect_send(self.profile, dev), check_category(dev))
            self._first_expect[dev.index] = cached
        return cached

    def _judge_first(self, dev: VirtualDevice, r1: HttpResponse, label: str) -> None:
        """Judge an episode's first answer (both paths: ``_episode`` and ``_first_claim``)."""
        first_exp, category = self._expect_first(dev)
        self._judge(dev, category, first_exp, r1, None, label)
        self.by_cohort[(dev.cohort.name, _STATUS_KEYS.get(r1.status) or str(r1.status))] += 1

    def _start(self, due: float) -> float:
        """A send starts now: its start time, counted as a late start when past ``due``."""
        start = self.clock()
        if start - due > LATE_START_S:
            self.results.late_starts += 1
        return start

    def _first_claim(self, item: Signed, due: float, then: Callable[[int], None]) -> None:
        """A ``first_claim`` episode as callbacks: what ``_episode`` does with it, then ``then``.

        The answer is only timed and queued here; ``_first_answers`` does the rest."""
        dev, body = item[1], item[4]
        clock = self.clock
        start = self._start(due)

        def answered(response: HttpResponse | None, error: TransportError | None) -> None:
            answers = self._answers
            if not answers:
                self._loop.call_soon(self._first_answers)  # type: ignore[union-attr]
            answers.append((dev, due, start, clock(), response, error, then))

        self.transport.post_nowait(self.path, body, dev.headers, answered)

    def _first_answers(self) -> None:
        """Account for and judge the first-claim answers of one loop pass, then start the
        lanes' next episodes (their sends).

        Doing the bookkeeping of a pass's answers back to back, and only then the
        sends with their system calls, keeps its code and data in the CPU caches
        (as ``_check_tokens`` does for tokens): about 3 µs less CPU per claim, median
        of 14 A/B pairs. Each answer is timed when it arrives, not when it is judged.
        """
        batch, self._answers = self._answers, []
        account, judge = self._account, self._judge_first
        for dev, due, start, end, response, error, _ in batch:
            try:
                r1 = account(dev, _FIRST_CLAIM, due, start, response, error, end)
                if r1 is not None:
                    judge(dev, r1, _FIRST_CLAIM)
            except Exception as exc:  # a harness bug: stop the run loudly, as _guarded does
                self.errors.append(exc)
        for answer in batch:
            answer[6](answer[0].index)

    async def _send(
        self, dev: VirtualDevice, label: str, body: bytes, due: float
    ) -> HttpResponse | None:
        """Send one claim and account for it exactly once; None when the episode must stop."""
        clock = self.clock
        start = self._start(due)
        try:
            response = await self.transport.post(self.path, body, dev.headers)
        except (TransportTimeout, TransportConnectionError) as exc:
            return self._account(dev, label, due, start, None, exc, clock())
        return self._account(dev, label, due, start, response, None, clock())

    def _account(
        self,
        dev: VirtualDevice,
        label: str,
        due: float,
        start: float,
        response: HttpResponse | None,
        error: TransportError | None,
        end: float,
    ) -> HttpResponse | None:
        """Record one sent claim (answered or failed at ``end``) exactly once and run the
        per-answer checks; None when the episode must stop (no answer, or told to back off)."""
        if response is None:
            status = TIMEOUT if isinstance(error, TransportTimeout) else CONNECTION_ERROR
        else:
            status = _STATUS_KEYS.get(response.status) or str(response.status)
        latency = end - start
        from_schedule = end - due
        # RunResults.record_claim, with latencies buffered by HDR bucket (exactly equal).
        results = self.results
        results.sent += 1
        results.by_status[status] += 1
        results.by_scenario[(label, status)] += 1
        self.latency.add(latency)
        self.latency_scheduled.add(from_schedule)
        for obs in self.observers:
            obs.on_claim(label, status, latency, from_schedule)
        if response is None:
            self._unanswered(dev, label, status)
            return None
        code = response.status
        if CORRELATION_HEADER in response.headers:
            self.checks_correlation.evaluated += 1
        elif self.profile.correlation_on(code):
            self._violation(
                "correlation_id", dev, label, "X-Correlation-Id header", f"{code} without it"
            )
        if code == 429:
            retry_after = _retry_after(response.headers.get("retry-after"))
            self._not_before[dev.index] = end + retry_after
            return None  # rate_limited: an outcome, not a violation; the device backs off
        if code == 200:
            self._check_token(dev, label, response.body)
            if response.headers.get(IDEMPOTENT_HEADER, "").lower() == "true":
                self.replays += 1
        if code >= 500:
            # The server failed: judge this answer, but what it recorded is unknown.
            return response
        if (
            not dev.provisioned
            and code not in (409, 422)  # a 429 returned above, before the server looked
            and self.profile.auto_registers(dev.normalized_id)
        ):
            self._auto_registered.add(dev.index)
        return response

    # --- checks ------------------------------------------------------------------------------
    def _unanswered(self, dev: VirtualDevice, label: str, status: str) -> None:
        """A claim that got no HTTP answer violates the check its send belongs to.

        No profile predicts silence: an expected answer that never came (most of
        all an expected 200) is a failure of the run, never a pass by omission.
        """
        check = SEND_CHECKS.get(label)
        if check is None:  # an episode's first send: the device's own check
            exp, check = self._expect_first(dev)
            expected = exp.describe()
        else:
            expected = "an HTTP answer"
        self._violation(check, dev, label, expected, status.replace("_", " "))

    def _violation(
        self, name: str, dev: VirtualDevice, label: str, expected: str, got: str
    ) -> None:
        """Count one violation of check ``name`` with a masked example."""
        self.results.checks[name].record(
            False,
            {
                "device_id": mask_id(dev.device_id),
                "cohort": dev.cohort.name,
                "scenario": label,
                "expected": expected,
                "got": got,
            },
        )
        for obs in self.observers:
            obs.on_violation(name)

    def _judge(
        self,
        dev: VirtualDevice,
        check: str,
        exp: Expectation,
        response: HttpResponse,
        first_body: bytes | None,
        label: str,
    ) -> None:
        problem = judge_send(exp, response.status, response.headers, response.body, first_body)
        if problem is None:
            self.results.checks[check].evaluated += 1
        else:
            self._violation(check, dev, label, exp.describe(), problem)

    def _after_pair(
        self, dev: VirtualDevice, r1: HttpResponse, r2: HttpResponse, registered: bool
    ) -> None:
        exp = expect_concurrent(self.profile, dev, registered)
        problem = judge_pair(exp, (r1.status, r2.status), (r1.body, r2.body))
        if problem is None:
            self.results.checks["concurrent_retry"].evaluated += 1
        else:
            self._violation(
                "concurrent_retry", dev, "concurrent_duplicate", exp.describe(), problem
            )

    def _check_token(self, dev: VirtualDevice, label: str, body: bytes) -> None:
        """Queue a 200's token for this loop pass's batch (checked before the run ends)."""
        pending = self._pending_tokens
        if not pending and self._loop is not None:
            self._loop.call_soon(self._check_tokens)
        pending.append((dev, label, body))

    def _check_tokens(self) -> None:
        """Check the tokens of the 200s that arrived in one loop pass, back to back.

        Every token is still checked, with the same counts and examples, one loop
        pass later. Measured with the benchmark's null server, checking them in one
        batch instead of one at a time between the sends and receives cut the CPU per
        claim by about a tenth: the check's code and data stay in the CPU caches
        from one token to the next. A harness bug in a check stops the run loudly,
        as one inside an episode does.
        """
        pending, self._pending_tokens = self._pending_tokens, []
        problems = self.fast_tokens.problems
        every = self.o.token_verify_every
        signed = self.fast_tokens.verifies_signatures
        checks = self.checks_tokens
        try:
            for dev, label, body in pending:
                token = _access_token(body)
                d, c = dev.norm_ids
                problem = problems(token, d, c)
                self.tokens_checked += 1
                if signed:
                    self.signatures_checked += 1
                if problem is None and self.tokens_checked % every == 0:
                    cross = self._cross_pending
                    cross.append((dev, label, token))  # judged once pyjwt has seen it
                    if len(cross) >= CROSS_CHECK_BATCH:
                        self._cross_checks()
                elif problem is None:
                    checks.evaluated += 1
                else:
                    self._violation("token_claims", dev, label, "contract token claims", problem)
        except Exception as exc:
            self.errors.append(exc)

    def _cross_checks(self) -> None:
        """Tokens the fast check passed (every ``token_verify_every``-th), checked again
        by pyjwt's ``check_token``, ``CROSS_CHECK_BATCH`` at a time.

        pyjwt runs for one token in a hundred, so alone its code is out of the CPU
        caches every time: 160-190 µs per check in the running harness against about
        90 µs in isolation, and 130-140 µs in batches of 8 (three timed 3 s runs
        each), where all but the first run warm. Their verdicts count at the batch.
        """
        pending, self._cross_pending = self._cross_pending, []
        for dev, label, token in pending:
            self.tokens_cross_checked += 1
            text = token.decode("ascii") if isinstance(token, bytes) else str(token)
            result = check_token(text, dev.device_id, dev.child_id, "access", self.jwt_secret)
            if result.ok:
                self.checks_tokens.evaluated += 1
                continue
            # keep only what is wrong, not the values (device IDs)
            keys = sorted({p.split("=", 1)[0].split(":", 1)[0] for p in result.problems})
            problem = f"pyjwt check_token: {', '.join(keys)}"
            self._violation("token_claims", dev, label, "contract token claims", problem)

    # --- progress ------------------------------------------------------------------------------
    async def _progress(self, stream: IO[str]) -> None:
        start = self.clock()
        last_sent, last_t = 0, start
        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            r = self.results
            rate = (r.sent - last_sent) / (now - last_t) if now > last_t else 0.0
            last_sent, last_t = r.sent, now
            violations = sum(t.violations for t in r.checks.values())
            line = progress_line(now - start, r.sent, rate, r.by_status, violations, r.late_starts)
            stream.write(line + "\n")
            stream.flush()

    async def _write_counts(self, path: str) -> None:
        """Every ``PROGRESS_FILE_S``: this worker's running counts, for the parent's progress."""
        while True:
            await asyncio.sleep(PROGRESS_FILE_S)
            write_counts(path, self.results)


def progress_line(
    elapsed: float,
    sent: int,
    rate: float,
    by_status: Mapping[str, int],
    violations: int,
    late: int,
) -> str:
    """One live progress line; the same format in one process and merged over ``--workers``."""
    statuses = " ".join(f"{k}={v}" for k, v in sorted(by_status.items()))
    return (
        f"[{elapsed:6.1f}s] sent={sent} {rate:,.0f}/s {statuses} "
        f"violations={violations} late={late}"
    )


def write_counts(path: str, results: RunResults) -> None:
    """Write the running counts atomically (a reader never sees half a file)."""
    counts = {
        "sent": results.sent,
        "by_status": dict(results.by_status),
        "violations": sum(t.violations for t in results.checks.values()),
        "late": results.late_starts,
    }
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(counts))
        os.replace(tmp, path)
    except OSError:  # progress is best effort; the results are what count
        pass


# An episode with its device, first nonce (hex), that nonce's good claim HMAC (hex) and
# the claim body carrying both.
Signed = tuple[Episode, VirtualDevice, str, str, bytes]
_STATUS_KEYS = {code: str(code) for code in range(100, 600)}
_FIRST_CLAIM = SEND_LABELS["first_claim"][0]
# Sends of a firmware's own retries (harness.firmware): a fresh attempt, a resend of its body.
LIVE_RETRY, LIVE_RESEND = "firmware_attempt", "firmware_resend"
# The check a send belongs to, for sends that are not an episode's first (those are judged
# under the device's own check, harness.oracle.check_category).
SEND_CHECKS: dict[str, str] = {
    "retry_after_loss": "idempotent_retry",
    "concurrent_duplicate": "concurrent_retry",
    "replay_other_hmac": "replay_conflict",
    "bad_hmac": "replay_conflict",
    "corrected_retry": "replay_conflict",
    "invalid_body": "validation",
}
# A first claim's answer as it arrived: device, due, start, end, response, error, then.
_Answer = tuple[
    VirtualDevice,
    float,
    float,
    float,
    HttpResponse | None,
    TransportError | None,
    Callable[[int], None],  # then(device index): the lane or the open model goes on
]
_TOKEN_KEY = b'"access_token":'


def _access_token(body: bytes) -> object:
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


def _retry_after(value: str | None) -> float:
    """Retry-After in seconds (HTTP dates are not expected from a claim server)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


def run_soak_sync(options: SoakOptions) -> SoakOutcome:
    """``run_soak`` in a fresh event loop (uvloop when installed): for the CLI and workers."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_soak(options))
    # Outside the try: an ImportError raised during the run must not start it again.
    return uvloop.run(run_soak(options))
