"""The harness's own subscriber: what the broker really delivered, checked per device.

It subscribes to every device's topics as ``harness-observer`` and tallies what
arrives; the sessions (``harness.mqtt.fleet``) tell it what they published and
had acknowledged. ``verdicts`` then compares the two into the run's checks:

- ``mqtt_birth``: each acknowledged birth seen exactly once (QoS 1 may repeat it,
  which is a violation for a birth: a device would announce itself twice);
- ``mqtt_heartbeat_gaps``: every acknowledged heartbeat seen, no sequence number
  skipped (repeats are counted as duplicates, not gaps);
- ``mqtt_last_will``: the will of every session killed without DISCONNECT seen;
- ``mqtt_ping``: every ``ping`` it sent to a session that stayed up answered;
- ``mqtt_isolation``: every cross-device publish refused by the broker and never
  delivered.

Messages the broker replays from its retained store (``retain`` set on delivery)
are not live traffic and are not counted. Examples carry masked device IDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttError

from harness.errors import HarnessInputError
from harness.masking import mask_id
from harness.mqtt.client import CLIENT_LOG, DeviceClient, settle
from harness.mqtt.stats import MqttStats
from harness.mqtt.topics import Topics
from harness.results import RunResults

RECONNECT_S = 0.2
DRAIN_S = 5.0  # at the end, how long to wait for what was acknowledged to arrive
# After the observer (re)subscribes, what is acknowledged this soon may have been routed
# before its subscription was: not observable, so neither counted nor judged.
BLIND_MARGIN_S = 0.5
QUIET_S = 0.3  # the drain ends once nothing has arrived for this long
PING_GRACE_S = 2.0  # a session that ended this soon after its ping is excused its pong


# Where one evaluation goes: ``Judge.judged`` in a run, ``RunResults.judged`` alone.
Judged = Callable[[str, bool, "dict[str, Any] | None"], None]


@dataclass(slots=True)
class _Device:
    acked: int = 0  # heartbeats 0..acked-1 were acknowledged
    low: int = 0  # every heartbeat below this one was seen (a watermark: soaks are long)
    above: set[int] = field(default_factory=set)  # seen, at or above the watermark
    blind: set[int] = field(default_factory=set)  # acknowledged while nothing could see them
    births_acked: set[str] = field(default_factory=set)
    pinged: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (session, at)

    def saw(self, seq: int) -> bool:
        """Record heartbeat ``seq``; False when it was seen before (a duplicate)."""
        if seq < self.low or seq in self.above:
            return False
        self.above.add(seq)
        while self.low in self.above:
            self.above.discard(self.low)
            self.low += 1
        return True

    @property
    def seen(self) -> int:
        return self.low + len(self.above)

    def missing(self) -> list[int]:
        """Acknowledged, observable and not seen."""
        return [
            s for s in range(self.low, self.acked) if s not in self.above and s not in self.blind
        ]

    def skipped(self) -> list[int]:
        """Sequence numbers jumped over: seen past ones never sent nor acknowledged."""
        top = max(self.above, default=self.low - 1)
        return [s for s in range(self.acked, top) if s not in self.above]


class MqttObserver:
    """One subscriber for the run's devices (``watch``ed ones only: a worker's own)."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: Topics,
        stats: MqttStats,
        username: str | None,
        password: str | None,
    ) -> None:
        self.host, self.port, self.topics, self.stats = host, port, topics, stats
        self.username, self.password = username, password
        self.devices: dict[str, _Device] = {}
        self.cohorts: dict[str, str] = {}  # device -> its cohort's name (for examples)
        self.births: Counter[tuple[str, str]] = Counter()
        self.offline: set[tuple[str, str]] = set()
        self.answered: set[str] = set()
        self.killed: set[tuple[str, str]] = set()  # sessions cut without DISCONNECT
        self.ended: dict[tuple[str, str], float] = {}  # sessions lost or closed, and when
        self.probes: dict[str, tuple[str, str | None]] = {}  # session -> (d, refusal)
        self.probes_seen: set[str] = set()
        self.lost_pings: set[str] = set()  # unanswered when the broker went: not observable
        self.bad_tokens: list[tuple[str, str | None]] = []  # (d, refusal reason or None)
        self.ready = asyncio.Event()
        self.blind_until = math.inf  # until subscribed, nothing is observable
        self.last_message = 0.0  # monotonic: when anything last arrived (the drain waits)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._prefix_len = len(topics.prefix) + 1

    # --- what the sessions tell it --------------------------------------------------------
    def watch(self, d: str, cohort: str = "") -> None:
        self.devices.setdefault(d, _Device())
        self.cohorts[d] = cohort

    @property
    def blind(self) -> bool:
        return time.monotonic() < self.blind_until

    def birth_acked(self, d: str, session_id: str) -> None:
        if self.blind:
            self.stats.counts["unobserved"] += 1
            return
        self.devices[d].births_acked.add(session_id)
        self._ping(d, session_id)

    def heartbeat_acked(self, d: str, seq: int) -> None:
        dev = self.devices[d]
        dev.acked = max(dev.acked, seq + 1)
        if self.blind:
            self.stats.counts["unobserved"] += 1
            dev.blind.add(seq)

    def session_killed(self, d: str, session_id: str) -> None:
        if self.blind:
            self.stats.counts["unobserved"] += 1
            return
        self.killed.add((d, session_id))

    def session_lost(self, d: str, session_id: str) -> None:
        self.ended[(d, session_id)] = time.monotonic()

    def session_closed(self, d: str, session_id: str) -> None:
        self.ended.setdefault((d, session_id), time.monotonic())

    def probed(self, d: str, session_id: str, refusal: str | None) -> None:
        self.probes[session_id] = (d, refusal)

    def bad_token(self, d: str, refusal: str | None) -> None:
        self.bad_tokens.append((d, refusal))

    def broker_lost(self) -> None:
        """The broker is about to go: what it acknowledged but has not delivered yet may
        die with it (a PUBACK is not a delivery), so that is not observable, and nothing
        from now until the observer is subscribed again is either."""
        self.blind_until = math.inf
        for d, dev in self.devices.items():
            for seq in dev.missing():
                dev.blind.add(seq)
                self.stats.counts["unobserved"] += 1
            for sid in [sid for sid in dev.births_acked if not self.births[(d, sid)]]:
                dev.births_acked.discard(sid)
                self.stats.counts["unobserved"] += 1
            for ping_id in dev.pinged:
                if ping_id not in self.answered:  # its pong may die with the broker
                    self.lost_pings.add(ping_id)
        for key in [k for k in self.killed if k not in self.offline]:
            self.killed.discard(key)  # its will may die with the broker
            self.stats.counts["unobserved"] += 1

    # --- the subscriber -------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribed, or the first attempt's error (a broker that is not there is bad
        input, not something to wait out)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        ready = asyncio.ensure_future(self.ready.wait())
        await asyncio.wait([ready, self._task], timeout=15.0, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            failed = self._task.done() and self._task.exception()
            self._task.cancel()
            where = f"{self.host}:{self.port}"
            raise HarnessInputError(
                "--mqtt",
                f"no MQTT broker answered at {where}: "
                + (str(failed) if failed else "no SUBACK within 15 s"),
            )

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with DeviceClient(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=f"harness-observer-{uuid.uuid4().hex[:8]}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    max_queued_incoming_messages=0,
                    logger=CLIENT_LOG,
                ) as client:
                    self._client = client
                    client.pending_calls_threshold = 1 << 30  # a ping per device at once
                    granted = await client.subscribe(self.topics.every_device, qos=1)
                    codes = granted if isinstance(granted, list | tuple) else [granted]
                    refused = [c for c in codes if getattr(c, "is_failure", False)]
                    if refused:  # an ACL that lets the observer read nothing
                        raise MqttError(f"the broker refused the subscription: {refused[0]}")
                    first = not self.ready.is_set()
                    self.blind_until = time.monotonic() + (0.0 if first else BLIND_MARGIN_S)
                    self.ready.set()
                    async for message in client.messages:
                        self._seen(message)
            except MqttError:
                if not self.ready.is_set():
                    raise  # the first attempt: start() reports it
                if self._client is not None:
                    settle(self._client)
                self._client = None
                self.blind_until = math.inf
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RECONNECT_S)

    def _seen(self, message: aiomqtt.Message) -> None:
        self.last_message = time.monotonic()
        if message.retain:
            return  # the broker's retained store, replayed on subscribe: not live traffic
        topic = message.topic.value
        d, _, kind = topic[self._prefix_len :].partition("/")
        dev = self.devices.get(d)
        if dev is None:
            return  # another worker's device
        try:
            data = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return
        if not isinstance(data, dict):
            return
        if data.get("probe") == "isolation":
            self.probes_seen.add(str(data.get("from")))
            return
        if kind == "heartbeat":
            seq = data.get("seq")
            if not isinstance(seq, int) or seq < 0:
                return
            if not dev.saw(seq):
                self.stats.counts["duplicates"] += 1
                return
            sent = data.get("sent_at")
            if isinstance(sent, int | float):
                self.stats.heartbeat_latency.record(max(time.time() - sent, 0.0))
        elif kind == "status":
            sid = str(data.get("session_id"))
            if data.get("state") == "online":
                self.births[(d, sid)] += 1
            elif data.get("state") == "offline":
                self.offline.add((d, sid))
        elif kind == "reply" and data.get("cmd") == "pong":
            self.answered.add(str(data.get("id")))

    def _ping(self, d: str, session_id: str) -> None:
        """A ``ping`` to a device that just came online (once per device)."""
        dev = self.devices[d]
        client = self._client
        if dev.pinged or client is None:
            return
        ping_id = uuid.uuid4().hex
        dev.pinged[ping_id] = (session_id, time.monotonic())
        body = json.dumps({"cmd": "ping", "id": ping_id}).encode()

        async def send() -> None:
            with contextlib.suppress(MqttError):
                await client.publish(self.topics.command(d), body, qos=1)
                return
            dev.pinged.pop(ping_id, None)  # never sent: nothing to answer

        asyncio.get_running_loop().create_task(send())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MqttError):
                await self._task

    # --- the verdicts ---------------------------------------------------------------------
    def _excused(self, ping_id: str, d: str, sid: str, at: float) -> bool:
        """A ping its session could not answer: it ended (cut, lost, closed by the run)
        within ``PING_GRACE_S`` of it, or the broker went while it was unanswered."""
        if (d, sid) in self.killed:
            return True
        if ping_id in self.lost_pings:
            return True
        ended = self.ended.get((d, sid))
        return ended is not None and ended - at < PING_GRACE_S

    def _missing(self) -> int:
        """What was acknowledged but not seen yet (the drain waits for it to reach 0)."""
        left = 0
        for d, dev in self.devices.items():
            left += len(dev.missing())
            left += sum(1 for sid in dev.births_acked if not self.births[(d, sid)])
            left += sum(
                1
                for p, (sid, at) in dev.pinged.items()
                if p not in self.answered and not self._excused(p, d, sid, at)
            )
        left += sum(1 for k in self.killed if k not in self.offline)
        return left

    def pings_pending(self) -> bool:
        """A ping still owed a pong by a session that has not ended."""
        return any(
            p not in self.answered and not self._excused(p, d, sid, at)
            for d, dev in self.devices.items()
            for p, (sid, at) in dev.pinged.items()
        )

    async def drain(self, limit_s: float = DRAIN_S) -> None:
        """Until everything acknowledged has arrived and nothing more has for a moment
        (delivered messages not acknowledged yet still come), or ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self.last_message >= QUIET_S
            if quiet and not self._missing():
                return
            await asyncio.sleep(0.05)

    def verdicts(self, results: RunResults, judged: Judged | None = None) -> None:
        """Each check's evaluations, examples masked, through ``judged`` (a run's
        ``Judge.judged``, so that violations reach the series and the observers as the
        claims' do; default: straight into ``results``). The four session checks are in
        the results even when nothing was evaluated."""
        for name in ("mqtt_birth", "mqtt_heartbeat_gaps", "mqtt_last_will", "mqtt_ping"):
            results.check(name)
        judged = judged or results.judged
        counts = self.stats.counts
        for d, dev in self.devices.items():
            cohort = self.cohorts.get(d, "")
            for sid in sorted(dev.births_acked):
                n = self.births[(d, sid)]
                counts["births"] += min(n, 1)
                counts["birth_duplicates"] += max(n - 1, 0)
                problem = None if n == 1 else ("never seen" if n == 0 else f"seen {n} times")
                judged("mqtt_birth", problem is None, example(d, cohort, "birth once", problem))
            bad = dev.missing() + dev.skipped()
            counts["heartbeats_seen"] += dev.seen
            counts["gaps"] += len(bad)
            if dev.acked or dev.seen:
                got = f"{len(bad)} missing, first seq {bad[0]}" if bad else None
                judged(
                    "mqtt_heartbeat_gaps",
                    not bad,
                    example(d, cohort, "every acknowledged seq", got),
                )
            for ping_id, (sid, at) in dev.pinged.items():
                counts["pings_sent"] += 1
                if ping_id in self.answered:
                    counts["pings_answered"] += 1
                    judged("mqtt_ping", True)
                elif not self._excused(ping_id, d, sid, at):
                    judged("mqtt_ping", False, example(d, cohort, "a pong", "no answer"))
        for d, sid in sorted(self.killed):
            counts["wills_expected"] += 1
            seen = (d, sid) in self.offline
            counts["wills_seen"] += seen
            got = None if seen else "never seen"
            judged(
                "mqtt_last_will",
                seen,
                example(d, self.cohorts.get(d, ""), "the will (offline)", got),
            )
        if self.probes:
            for sid, (d, refusal) in self.probes.items():
                counts["isolation_probes"] += 1
                seen = sid in self.probes_seen
                counts["isolation_refused"] += refusal is not None
                counts["isolation_seen"] += seen
                problem = "delivered to the other device" if seen else None
                if refusal is None and problem is None:
                    problem = "acknowledged without a refusal"
                expected = "refused, never delivered"
                judged(
                    "mqtt_isolation",
                    problem is None,
                    example(d, self.cohorts.get(d, ""), expected, problem),
                )
        if self.bad_tokens:
            for d, refusal in self.bad_tokens:
                got = None if refusal else "accepted"
                judged(
                    "mqtt_auth",
                    refusal is not None,
                    example(d, self.cohorts.get(d, ""), "refused at CONNACK", got),
                )


def example(
    d: str, cohort: str, expected: str, got: str | None, scenario: str = "mqtt_session"
) -> dict[str, Any] | None:
    """A violation's example as the claim checks write theirs, the device ID masked."""
    if got is None:
        return None
    return {
        "device_id": mask_id(d),
        "cohort": cohort,
        "scenario": scenario,
        "expected": expected,
        "got": got,
    }
