"""The soak runner: play the claim plan against a server, judge every answer.

Open model (``rate``: send ``i`` is due at ``t0 + i/rate`` whatever the server
does, so a stall shows up as latency from the scheduled time and as late
starts) or closed model (``concurrency`` lanes, each starting its next episode
when its last is over). Either way a device has one claim attempt in flight, as
a real one does. What an episode sends is its scenario's (``harness.scenarios``,
driven by ``harness.run.episodes``); what each answer means is the judge's
(``harness.judge``). A bench's boards (``SoakOptions.bench``) are devices of the
same run, beside the fleet's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from harness.errors import HarnessInputError
from harness.faults.phases import FaultJudge
from harness.faults.stage import FaultStage
from harness.faults.windows import FaultWindow, check_windows
from harness.fleet.model import Fleet
from harness.fleet.plan import Episode, plan_episodes
from harness.judge import Judge
from harness.masking import mask_url
from harness.metrics import scrape_server_counters
from harness.mqtt.fleet import MqttOptions, SessionFleet
from harness.mqtt.spec import SessionSpec
from harness.profiles import ServerProfile
from harness.protocol.signing import PrefixedHmac
from harness.protocol.tokens import ACCESS_TTL
from harness.run.episodes import EpisodeDriver, Signed
from harness.run.options import (
    DEFAULT_CLAIMS,
    DEFAULT_CONCURRENCY,
    SoakOptions,
    SoakOutcome,
    new_run_id,
    prepare_fleet,
    run_seed,
    server_profile,
    validate_options,
)
from harness.run.progress import keep_writing_counts, print_progress, write_counts
from harness.server.config import ServerConfig
from harness.server.embedded import embedded_server
from harness.shard import Shard, shard_indices
from harness.tls import client_context
from harness.transport import TransportError, make_transport

MAX_IN_FLIGHT = 10_000  # open model: beyond this, arrivals wait (and count as late)
# A run with no deadline (--claims) stops when the server has answered nothing this long:
# devices that back off as the firmware does would otherwise wait on a dead server for ever.
STALL_LIMIT_S = 120.0
# After the hold, how long sessions may take to come back from a broker loss (the
# firmware's back-off reaches 60 s) or to reach their planned kill, before judging.
RECOVERY_LIMIT_S = 90.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Closed model: episodes that may wait for their busy device before lanes stop taking more
# from the plan (a hot device then slows its lanes instead of growing the list).
DEFER_LIMIT = 1024


async def run_soak(options: SoakOptions) -> SoakOutcome:
    """Run one soak (or one shard of it) and return the judged results."""
    validate_options(options)
    fleet = prepare_fleet(options)
    claims = options.claims
    if claims is None and options.duration is None and fleet is not None:
        claims = DEFAULT_CLAIMS
    profile = server_profile(options, fleet)
    windows = fault_windows(options, fleet)
    mqtt_options(options, fleet, windows)  # refused here, before anything starts
    windows = tuple(w for w in windows if w.target != "mqtt")  # the MQTT side plays those
    if windows:
        return await _faulted(options, fleet, profile, claims, windows)
    if options.target is not None:
        run = _Run(options, fleet, profile, options.target, options.jwt_secret, claims)
        return await run.run()
    ttl = access_ttl(options, fleet)
    server = embedded_server(
        profile,
        run_seed(options, fleet),
        mode=options.server_mode,  # type: ignore[arg-type]
        access_ttl_s=ttl,
    )
    async with server:
        return await _Run(options, fleet, profile, server.url, server.jwt_secret, claims).run()


def _tls_mode(url: str, o: SoakOptions) -> str | None:
    """How an https target's certificate was checked (None: plain HTTP)."""
    if not url.startswith("https:"):
        return None
    if o.insecure:
        return "NOT verified (--insecure)"
    return "verified against --ca-bundle" if o.ca_bundle else "verified against the system CAs"


def fault_windows(options: SoakOptions, fleet: Fleet | None) -> tuple[FaultWindow, ...]:
    """The run's fault windows: ``--fault`` if given, else the fleet file's ``[[faults]]``."""
    windows = options.faults or (fleet.faults if fleet is not None else ())
    check_windows(windows)
    return windows


def access_ttl(options: SoakOptions, fleet: Fleet | None) -> int:
    """The access-token lifetime the server issues: ``--access-ttl``, else the fleet's
    ``[session] access_ttl`` (which an embedded server is told), else v5's hour."""
    if options.access_ttl_s is not None:
        return options.access_ttl_s
    if fleet is not None and fleet.access_ttl_s is not None:
        return fleet.access_ttl_s
    return ACCESS_TTL


def mqtt_options(
    options: SoakOptions, fleet: Fleet | None, windows: tuple[FaultWindow, ...] = ()
) -> MqttOptions | None:
    """The run's MQTT side: ``--mqtt``, or an embedded broker when a cohort asks for
    sessions (``[session] mqtt = true``); None when no device goes online."""
    asked = fleet is not None and any(c.session.mqtt for c in fleet.cohorts)
    opts = options.mqtt
    if opts is None and asked:
        opts = MqttOptions()
    broker_windows = [w for w in windows if w.target == "mqtt"]
    if broker_windows and (opts is None or not opts.embedded):
        raise HarnessInputError(
            "--fault", "mqtt windows need the embedded broker (--mqtt embedded or [session])"
        )
    if opts is not None and not asked and not opts.every_cohort:
        return None
    return opts


async def _faulted(
    options: SoakOptions,
    fleet: Fleet | None,
    profile: ServerProfile,
    claims: int | None,
    windows: tuple[FaultWindow, ...],
) -> SoakOutcome:
    """A run through fault windows: its server and stores behind fault proxies."""
    config = None
    if options.target is None:
        config = ServerConfig.running(profile, run_seed(options, fleet))
        config = replace(config, access_ttl_s=access_ttl(options, fleet))
    stage = FaultStage(windows, config, options.target, mode=options.server_mode)  # type: ignore[arg-type]
    await asyncio.to_thread(stage.start)
    try:
        secret = options.jwt_secret if options.target is not None else stage.jwt_secret
        return await _Run(options, fleet, profile, stage.url, secret, claims, stage).run()
    finally:
        await asyncio.to_thread(stage.stop)


def run_soak_sync(options: SoakOptions) -> SoakOutcome:
    """``run_soak`` in a fresh event loop (uvloop when installed): for the CLI and workers."""
    try:
        import uvloop  # optional: the fastest loop when it is there
    except ImportError:
        return asyncio.run(run_soak(options))
    # Outside the try: an ImportError raised during the run must not start it again.
    return uvloop.run(run_soak(options))


class _Run:
    """One run: the plan, the lanes or the arrival clock, and the devices in flight."""

    def __init__(
        self,
        options: SoakOptions,
        fleet: Fleet | None,
        profile: ServerProfile,
        url: str,
        jwt_secret: str | None,
        claims: int | None,
        stage: FaultStage | None = None,
    ) -> None:
        self.o = options
        self.stage = stage
        self.fleet = fleet
        self.profile = profile
        self.url = url
        self.jwt_secret = jwt_secret
        self.claims = claims
        self.judge = Judge(
            profile,
            jwt_secret,
            list(options.observers),
            options.token_verify_every,
            check_refresh=options.check_refresh_tokens,
            access_ttl_s=access_ttl(options, fleet),
        )
        self.results = self.judge.results
        self.errors = self.judge.errors
        self._devices: dict[int, tuple[Any, PrefixedHmac]] = {}
        self.clock = time.monotonic
        self.run_id = options.run_id or new_run_id()
        self.deadline: float | None = None
        self.info: dict[str, Any] = {}
        # Closed model: the signed episodes, lanes still running, their end.
        self._queue: Iterator[Signed] = iter(())
        self._lanes = 0
        # Set when the run's episodes are all over (or a harness bug stopped it).
        self._finished: asyncio.Future[None] | None = None
        self._busy: set[int] = set()  # devices with an episode in flight
        self._deferred: list[Signed] = []  # episodes waiting for their busy device
        self._parked = 0  # lanes waiting for a device to come free
        self._stopped_at = 0.0  # when SIGINT/SIGTERM (or the stall watch) stopped the run
        self.start = 0.0  # when the run's first episode started (monotonic)

    # --- the run ---------------------------------------------------------------------
    def _plan(self, shard: Shard) -> tuple[Iterator[Episode], list[tuple[Episode, Any]], int]:
        """The fleet's episodes (this shard's), the bench's, and how many devices run."""
        fleet, bench = self.fleet, self.o.bench
        episodes: Iterator[Episode] = iter(())
        devices = 0
        if fleet is not None:
            owned = shard_indices(len(fleet), shard)  # a range: membership is O(1)
            owns = None if shard.is_whole else owned.__contains__
            episodes = plan_episodes(fleet, self.claims, owns)
            devices = len(owned)
        boards = bench.episodes(len(fleet) if fleet is not None else 0) if bench else []
        devices += len({ep.device for ep, _ in boards})
        return episodes, boards, devices

    def _describe(self, shard: Shard, devices: int, lanes: int | None) -> dict[str, Any]:
        o, fleet, bench = self.o, self.fleet, self.o.bench
        name = fleet.name if fleet is not None else f"bench:{bench.name}"  # type: ignore[union-attr]
        if fleet is not None and bench is not None:
            name = f"{fleet.name}+bench:{bench.name}"
        return {
            "run_id": self.run_id,
            "fleet": name,
            "fleet_source": fleet.source if fleet is not None else None,
            "seed": fleet.seed if fleet is not None else None,
            "devices": devices,
            "fleet_devices": len(fleet) if fleet is not None else devices,
            "target": o.target or "embedded",
            "url": self.url,
            "claim_path": o.claim_path,
            "flags": self.profile.flags.to_env(),
            "profile": self.profile.to_dict(),
            "atomic_idempotency": self.profile.atomic_idempotency,
            "model": "open" if o.rate is not None else "closed",
            "rate": o.rate,
            "concurrency": lanes,
            "claims_planned": self.claims,
            "duration_planned_s": o.duration,
            "connection": "keepalive" if o.keepalive else "fresh",
            "shard": str(shard) if o.shard else None,
            "token_verify_every": o.token_verify_every,
            "token_signatures": "all" if self.jwt_secret else "secret unknown: claims only",
            "tls": _tls_mode(self.url, o),
            "access_ttl_s": access_ttl(o, fleet),
        }

    async def run(self) -> SoakOutcome:
        o = self.o
        shard = Shard(*o.shard) if o.shard is not None else Shard()
        episodes, boards, devices = self._plan(shard)
        per_board: dict[int, list[Signed]] = {}
        for ep, dev in boards:  # a board's episodes run one after another in its own lane
            per_board.setdefault(ep.device, []).append((ep, dev, "", "", b""))
        wanted = o.concurrency or DEFAULT_CONCURRENCY
        lanes = None if o.rate is not None else min(wanted, max(devices, 1))
        fleet_lanes = 0
        if lanes is not None:
            fleet_lanes = max(lanes - len(per_board), 1 if self.fleet is not None else 0)
            lanes = fleet_lanes + len(per_board)
        self.info = self._describe(shard, devices, lanes)
        if lanes is not None and lanes < wanted:  # a device has one claim in flight
            self.info["concurrency_capped_from"] = wanted
        for obs in self.judge.observers:
            obs.on_start(self.info)
        loop = asyncio.get_running_loop()
        self.judge.schedule = loop.call_soon
        self._finished = loop.create_future()
        self._stopping = asyncio.Event()
        handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        tls = client_context(o.insecure, o.ca_bundle)  # per process: an SSLContext won't pickle
        transport = make_transport(
            self.url,
            mode="keepalive" if o.keepalive else "fresh",
            timeout=o.timeout,
            max_connections=o.max_connections,
            ssl_context=tls,
        )
        before = (
            await asyncio.to_thread(scrape_server_counters, self.url, context=tls)
            if o.server_counters
            else {}
        )
        side = [asyncio.create_task(self._watch_answers(o))] if o.duration is None else []
        if o.progress:
            stream = o.progress_stream or sys.stderr
            side.append(asyncio.create_task(print_progress(self.results, stream, self.clock)))
        if o.progress_file:
            side.append(asyncio.create_task(keep_writing_counts(o.progress_file, self.results)))
        try:
            mqtt = await self._mqtt_side(transport)  # before the clock starts: it takes a while
        except BaseException:  # no broker, or Ctrl-C while it starts: nothing left running
            for task in side:
                task.cancel()
            loop.set_exception_handler(handler)
            await transport.aclose()
            raise
        start = self.clock()
        self.deadline = None if o.duration is None else start + o.duration
        self.start = start
        # The run's start on the wall clock: the series' points are numbered on it, and the
        # HTML report draws fault windows (offsets from the start) on the same time axis.
        self.info["started_unix"] = round(time.time() - (self.clock() - start), 3)
        if self.stage is not None:  # the windows on time; their claims judged by their rows
            self.judge.faults = FaultJudge(self.judge, o.timeout)
            side.append(asyncio.create_task(self.stage.play(self.judge.faults, start)))
        self.driver = EpisodeDriver(self.judge, transport, o.claim_path, self.url, loop,
                                    self._device, o.firmware_time_scale, self.deadline)  # fmt: skip
        signals = self._catch_signals(loop)
        if mqtt is not None and mqtt.windows:
            side.append(asyncio.create_task(mqtt.play(mqtt.windows, start)))
        claims_over = 0.0
        try:
            signed = self.driver.signed(episodes)
            if o.rate is not None:
                await self._open_model(signed, o.rate, start)
            else:
                await self._closed_model(signed, fleet_lanes, list(per_board.values()))
            if mqtt is not None:
                claims_over = self.clock()  # the hold is not the claims' time (overrun, rates)
                await self._hold(mqtt)
        finally:
            self.driver.stopped = True
            self.results.duration_s = (claims_over if claims_over else self.clock()) - start
            for task in side:
                task.cancel()
            try:
                if mqtt is not None:  # before the transport closes: a refresh may be in flight
                    self.judge.on_token = None
                    await mqtt.close()
                    self.results.mqtt = mqtt.stats
            finally:  # a bug while the sessions close still stops the run loudly
                loop.set_exception_handler(handler)
            await transport.aclose()  # claims still in flight fail: accounted just below
            self.driver.flush()
            self.judge.flush()
            self.results.outages = self.judge.storm.report(start, self.clock())
            if self.judge.faults is not None:
                self.info["fault_windows"] = [a.to_dict(start) for a in self.judge.faults.applied]
            if self.stage is not None:  # what each proxy saw: one connection per fresh claim
                self.info["fault_proxies"] = {
                    name: proxy.stats.as_dict() for name, proxy in self.stage.proxies.items()
                }
            if o.progress_file:
                write_counts(o.progress_file, self.results)
        try:
            if self.errors:
                raise self.errors[0]
            after = (
                await asyncio.to_thread(scrape_server_counters, self.url, context=tls)
                if o.server_counters
                else {}
            )
        finally:  # kept to here: a second Ctrl-C while the run winds up must not lose it
            for sig in signals:
                loop.remove_signal_handler(sig)
        for obs in self.judge.observers:
            obs.on_finish(self.results)
        return SoakOutcome(self.results, self.info, before, after)

    async def _mqtt_side(self, transport: Any) -> SessionFleet | None:
        """The broker, the observer, and sessions for claimed devices (None: no MQTT)."""
        all_windows = fault_windows(self.o, self.fleet)
        opts = mqtt_options(self.o, self.fleet, all_windows)
        if opts is None:
            return None
        cohorts = self.fleet.cohorts if self.fleet is not None else ()
        every = opts.every_cohort and not any(c.session.mqtt for c in cohorts)

        specs: dict[str, SessionSpec] = {}  # per cohort, made once (this runs per 200)

        def spec_for(dev: Any) -> SessionSpec:
            spec: SessionSpec | None = specs.get(dev.cohort.name)
            if spec is None:
                spec = dev.cohort.session
                spec = specs[dev.cohort.name] = replace(spec, mqtt=True) if every else spec
            return spec

        seed = self.fleet.seed if self.fleet is not None else 0
        mqtt = SessionFleet(opts, self.judge, transport, spec_for, seed)
        mqtt.windows = [w for w in all_windows if w.target == "mqtt"]
        await mqtt.start()
        broker = "embedded" if opts.embedded else mask_url(opts.url)
        self.info["mqtt"] = {"broker": broker, "prefix": opts.prefix, "hold_s": opts.hold_s,
                             "acl": mqtt.acl,
                             "windows": [w.to_dict() for w in mqtt.windows]}  # fmt: skip
        self.judge.on_token = mqtt.claimed
        for obs in self.judge.observers:  # an optional hook: SoakMetrics registers its families
            hook = getattr(obs, "on_mqtt", None)
            if hook is not None:
                hook(mqtt.stats)
        return mqtt

    async def _hold(self, mqtt: SessionFleet) -> None:
        """Sessions stay up ``--mqtt-hold`` after the claims (and any broker window) end."""
        end = self.clock() + mqtt.options.hold_s
        for w in mqtt.windows:
            end = max(end, self.start + w.end_s + mqtt.options.hold_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(end - self.clock(), 0))
        if not self._stopping.is_set():  # a hold that ends before the devices are back,
            await mqtt.recovered(RECOVERY_LIMIT_S)  # or before its kills, judges nothing

    def _device(self, index: int) -> tuple[Any, PrefixedHmac]:
        """A device and its claim HMAC with the key and the signed IDs absorbed, built once."""
        entry = self._devices.get(index)
        if entry is None:
            dev = self.fleet.device(index)  # type: ignore[union-attr]
            dev.signer = self.o.signer
            entry = self._devices[index] = (dev, PrefixedHmac(dev.oob, dev.message("")))
        return entry

    # --- the closed model ------------------------------------------------------------------
    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """A bug in a loop callback that no guard caught: it stops the run loudly instead of
        being logged while the lanes wait forever. Network errors go to the loop's logger."""
        exc = context.get("exception")
        if exc is None or isinstance(exc, OSError | TransportError | asyncio.CancelledError):
            loop.default_exception_handler(context)
            return
        self.errors.append(exc)
        driver = getattr(self, "driver", None)  # None while the MQTT side starts
        if driver is not None:
            driver.stopped = True
        self._stopping.set()  # a hold ends too
        self._finish()

    def _finish(self) -> None:
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    # --- stopping early ------------------------------------------------------------------------
    def _catch_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        """SIGINT/SIGTERM stop the run gracefully (``stop_early``); only the main thread
        of a process can take signals, so a run in another thread is stopped by its owner."""
        if threading.current_thread() is not threading.main_thread():
            return []
        caught = []
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop_early, f"stopped by {sig.name}")
                caught.append(sig)
        return caught

    def stop_early(self, why: str) -> None:
        """Send nothing more, wait at most the claim timeout for claims in flight (they are
        accounted for either way), and mark the run ``partial``: its report is written
        but can never pass. A second signal stops at once."""
        if "partial" in self.info:
            # A second signal stops at once, unless it is the same Ctrl-C reaching this
            # process twice (from the terminal, and forwarded by a --workers parent).
            if self.clock() - self._stopped_at > 1.0:
                self._finish()
            return
        self._stopped_at = self.clock()
        self._stopping.set()
        elapsed = self.clock() - self.start
        self.info["partial"] = f"{why} after {elapsed:.1f} s"
        self.driver.stop()
        loop = asyncio.get_running_loop()
        loop.call_later(self.o.timeout + 1.0, self._finish)
        if self._lanes <= 0 and self.o.rate is None:
            self._finish()

    async def _watch_answers(self, o: SoakOptions) -> None:
        """Stop a run without a deadline once the server has answered nothing for
        ``STALL_LIMIT_S`` while claims kept failing."""
        results = self.results
        limit = max(STALL_LIMIT_S, 3 * o.timeout)

        def answered() -> int:
            silent = results.by_status["timeout"] + results.by_status["connection_error"]
            return results.sent - silent

        last, since = answered(), self.clock()
        while True:
            await asyncio.sleep(1.0)
            now, seen = self.clock(), answered()
            if seen != last or results.sent == seen:
                last, since = seen, now
            elif now - since >= limit:
                self.stop_early(f"stopped: the server answered nothing for {limit:.0f} s")
                return

    async def _closed_model(
        self, episodes: Iterator[Signed], workers: int, boards: list[list[Signed]]
    ) -> None:
        """``workers`` lanes, each starting the next episode when its last one is over, and a
        lane per board running that board's episodes in order."""
        self._queue = episodes
        self._lanes = workers + len(boards)
        if not self._lanes:
            return
        try:
            for _ in range(workers):
                self._next_episode()
            for items in boards:
                self._board_lane(iter(items))
            await self._finished  # type: ignore[misc]
        finally:
            # Only when cancelled is anything left: answers still in flight (failed by
            # the transport's aclose) must not start new episodes.
            self._queue = iter(())
            self._deferred.clear()

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
            running = running and not self.driver.stopped
            item = self._startable() if running else None
            if item is not None:
                self._busy.add(item[0].device)
                self.driver.start(item, now, self._lane_free)
                return
            if running and self._deferred:
                self._parked += 1
                return
        except Exception as exc:  # a harness bug (or the signer's): stop the run loudly
            self.errors.append(exc)
        self._lane_over()

    def _lane_over(self) -> None:
        self._lanes -= 1
        if self._lanes <= 0:
            self._finish()

    def _board_lane(self, items: Iterator[Signed]) -> None:
        """One board's episodes, one after another: a slow serial board holds up only its
        own lane, never the fleet's plan beside it."""

        def go_on(_device: int = -1) -> None:
            try:
                now = self.clock()
                running = not self.errors and not self.driver.stopped
                running = running and (self.deadline is None or now < self.deadline)
                item = next(items, None) if running else None
                if item is not None:
                    self.driver.start(item, now, go_on)
                    return
            except Exception as exc:  # a harness bug: stop the run loudly
                self.errors.append(exc)
            self._lane_over()

        go_on()

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

    # --- the open model --------------------------------------------------------------------
    async def _open_model(self, episodes: Iterator[Signed], rate: float, start: float) -> None:
        """Start episode ``i`` at ``start + first_send/rate``. An episode due while its device
        still has one in flight starts when that one is over (a late start), as a real
        device cannot claim twice at once."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        in_flight = 0
        draining = False
        waiting: dict[int, list[tuple[Signed, float]]] = {}  # episodes of busy devices
        busy = self._busy
        driver = self.driver

        def launch(item: Signed, due: float) -> None:
            nonlocal in_flight
            busy.add(item[0].device)
            in_flight += 1
            driver.start(item, due, over)

        def over(device: int) -> None:
            """A device's episode is over: its next due episode starts (late, counted)."""
            nonlocal in_flight
            in_flight -= 1
            slots.release()
            try:
                queue = waiting.get(device)
                if queue and driver.stopped:  # stopped: nothing more is sent
                    del waiting[device]
                    queue = None
                if queue:
                    launch(*queue.pop(0))
                    if not queue:
                        del waiting[device]
                else:
                    busy.discard(device)
            except Exception as exc:  # a harness bug: stop the run loudly
                self.errors.append(exc)
            if in_flight == 0 and draining:
                self._finish()

        for item in episodes:
            ep = item[0]
            due = start + ep.first_send / rate
            if self.errors or driver.stopped:
                break
            if self.deadline is not None and due >= self.deadline:
                break
            delay = due - self.clock()
            if delay > 0.05:  # a long wait (a low rate) ends early when the run is stopped
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            elif delay > 0.0005:
                await asyncio.sleep(delay)
            await slots.acquire()
            if driver.stopped:
                slots.release()
                break
            if ep.device in busy:  # one claim attempt in flight per device, as a real one
                waiting.setdefault(ep.device, []).append((item, due))
                continue
            launch(item, due)
        draining = True
        if in_flight:
            await self._finished  # type: ignore[misc]
