"""The run's MQTT side: the broker, the observer, and a session per claimed device.

The runner calls ``claimed`` for every 200; a device whose cohort asks for a
session (``[session] mqtt = true``, or every cohort under ``--mqtt``) goes online
with the tokens it got, and later claims only hand it newer tokens. ``close``
ends every session cleanly, lets the observer drain, and writes the checks and
the ``mqtt`` figures into the run's results.

On an embedded broker the harness is also its authentication backend
(``harness.mqtt.credentials``): a device's access token becomes its password
before it connects, and is revoked when it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from harness.device import Device
from harness.errors import HarnessInputError
from harness.faults.windows import FaultWindow
from harness.judge import Judge, silence_key
from harness.masking import mask_url
from harness.mqtt.broker import OBSERVER_USER, MosquittoBroker
from harness.mqtt.client import (
    collector_for_sessions,
    reason_name,
)
from harness.mqtt.credentials import BrokerCredentials
from harness.mqtt.observer import DRAIN_S, MqttObserver, example
from harness.mqtt.session import DeviceSession, Tokens
from harness.mqtt.spec import HEARTBEAT_DEFAULT_S, SessionSpec
from harness.mqtt.stats import MqttStats
from harness.mqtt.topics import DEFAULT_PREFIX, Topics
from harness.protocol.claim import REFRESH_PATH
from harness.token_check import _b64
from harness.transport import Transport, TransportError

RECONNECT_CHECK = "mqtt_reconnect"
REFRESH_REFUSAL = b"Token refresh failed"
# A device whose claim came this close to the end may not have connected yet: not judged.
CONNECT_GRACE_S = 3.0


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """``--mqtt URL|embedded``, ``--mqtt-prefix``, ``--mqtt-hold``, and whether the broker
    enforces the per-device ACL (an embedded one does; ``--mqtt-acl`` says an external one
    does)."""

    url: str = "embedded"
    prefix: str = DEFAULT_PREFIX
    hold_s: float = 0.0
    acl: bool | None = None  # None: True for an embedded broker, False for an external one
    every_cohort: bool = False  # --mqtt given: every cohort goes online, unless some ask
    # Called with the embedded broker once it is up, before any device connects: a test's
    # or a script's own subscriber attaches here (it is not passed to --workers processes).
    on_broker: Callable[[MosquittoBroker], Any] | None = field(default=None, compare=False)

    @property
    def embedded(self) -> bool:
        return self.url == "embedded"


def parse_broker_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user[:password]@]host[:port]`` -> (host, port, user, password). A user
    without a password takes ``MQTT_PASSWORD`` from the environment (not on argv)."""
    shown = mask_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise HarnessInputError("--mqtt", f"expected embedded or mqtt://host[:port], got {shown!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise HarnessInputError("--mqtt", f"bad port in {shown!r}") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if user is not None and password is None:
        password = os.environ.get("MQTT_PASSWORD") or None
    return parts.hostname, port, user, password


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (the judge verifies tokens; this only reads ``<d>``)."""
    try:
        payload = json.loads(_b64(token.split(".")[1].encode()))
    except (IndexError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


class SessionFleet:
    """The MQTT side of one run (one process of it): start, ``claimed``, ``play``, ``close``."""

    def __init__(
        self,
        options: MqttOptions,
        judge: Judge,
        transport: Transport,
        spec_for: Callable[[Device], SessionSpec],
        seed: int = 0,
    ) -> None:
        self.options = options
        self.judge = judge
        self.transport = transport
        self.spec_for = spec_for
        self.topics = Topics(options.prefix)
        self.stats = MqttStats(broker="embedded" if options.embedded else "external")
        self.stopping = asyncio.Event()
        self.rng = random.Random(seed ^ 0x6D717474)
        self.broker: MosquittoBroker | None = None
        self.host, self.port = "127.0.0.1", 0
        self.sessions: dict[str, DeviceSession] = {}
        self._order: list[str] = []  # devices in the order they came online (isolation peers)
        self.credentials: BrokerCredentials | None = None  # the embedded broker's
        self._online: set[str] = set()
        self._recovery: list[dict[str, Any]] = []  # open broker losses
        self.observer: MqttObserver | None = None
        self._gc = contextlib.ExitStack()  # the collector's thresholds, restored at the end
        self.windows: list[FaultWindow] = []
        # What the fleet asked to exercise: a check that then evaluated nothing fails.
        self._asked = {
            "kill_share": False,
            "bad_token_share": False,
            "isolation_probe": False,
        }  # the broker's own fault windows, for play()
        self.acl = options.acl if options.acl is not None else options.embedded

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """The broker (embedded) and the observer; on any failure, nothing left running."""
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        self._gc.enter_context(collector_for_sessions())
        user, password = OBSERVER_USER, None
        if self.options.embedded:
            self.broker = MosquittoBroker(auth=True, topics=self.topics)
            self.credentials = BrokerCredentials(self.broker)
            await asyncio.to_thread(self.broker.start)
            self.host, self.port = self.broker.host, self.broker.port
            password = self.broker.observer_password
            if self.options.on_broker is not None:
                await asyncio.to_thread(self.options.on_broker, self.broker)
        else:
            self.host, self.port, user, password = parse_broker_url(self.options.url)  # type: ignore[assignment]
        self.observer = MqttObserver(self.host, self.port, self.topics, self.stats, user, password)
        await self.observer.start()

    async def close(self) -> None:
        """Every session ends cleanly; what was acknowledged gets time to arrive; judged.
        Pings still owed get their pong first (at most ``DRAIN_S``): closing a session
        under its ping would excuse it rather than judge it."""
        deadline = time.monotonic() + DRAIN_S
        while self.observer is not None and self.observer.pings_pending():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        stranded = self._stranded()  # before stopping: stopping takes every session offline
        self.stopping.set()
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10.0)
        for task in tasks:
            task.cancel()
        observer = self.observer
        if observer is not None:
            await observer.drain()
            observer.verdicts(self.judge.results, self.judge.judged)
        self._connect_verdicts()
        self._exercised()
        self._reconnect_verdicts()
        self._stranded_verdicts(*stranded)
        await self.aclose()

    async def recovered(self, limit_s: float) -> None:
        """Wait (at most ``limit_s``) until every device a broker loss took is back, and
        until every planned kill has happened: a hold that ends first judges nothing."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            waiting = any(loss["_waiting"] or "_up" not in loss for loss in self._recovery)
            kills = [
                s.kill_at for s in self.sessions.values() if s.kill_at and not s.killed and s.online
            ]
            # A device not online yet that no CONNACK has refused is still on its way.
            coming = any(
                not s.ever_connected and s.last_refusal in (None, "no connection")
                for s in self.sessions.values()
            )
            if not waiting and not coming and not any(k > time.monotonic() - 1.0 for k in kills):
                return
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        self._gc.close()
        if self.credentials is not None:
            self.credentials.close()
        if self.observer is not None:
            await self.observer.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.close)

    # --- the runner's calls ------------------------------------------------------------------
    def claimed(self, dev: Device, body: bytes) -> None:
        """A 200 for ``dev``: its first goes online, a later one hands it the new tokens."""
        if dev.remote is not None:
            return  # a bench board has its own firmware and network
        spec = self.spec_for(dev)
        if not spec.mqtt:
            return
        try:
            data = orjson.loads(body)
            access, refresh = str(data["access_token"]), data.get("refresh_token")
            expires_in = float(data.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # the judge has counted the broken body already
        # The device's own normalised ID: what the judge requires its token to carry
        # (decoding the token again here cost 9 µs a 200).
        d = dev.norm_ids[0]
        tokens = Tokens(access, refresh, expires_in, time.monotonic())
        session = self.sessions.get(d)
        if session is not None:
            session.new_tokens(tokens)
            return
        config = data.get("device_config") if isinstance(data, dict) else None
        interval = HEARTBEAT_DEFAULT_S
        if isinstance(config, dict) and isinstance(config.get("heartbeat_interval"), int | float):
            interval = float(config["heartbeat_interval"])
            if not 0 < interval < 86_400:  # a server's nonsense must not spin a device
                interval = HEARTBEAT_DEFAULT_S
        rng = self.rng  # one for the fleet: a Random each is 2.5 KiB a session
        kill_at = None
        if spec.kill_share and rng.random() < spec.kill_share:
            kill_at = time.monotonic() + interval * spec.time_scale * rng.uniform(2.0, 4.0)
        session = DeviceSession(
            self,
            d,
            dev.device_id,
            dev.firmware_version or "unknown",
            spec,
            tokens,
            interval * spec.time_scale,
            rng,
            kill_at,
            bad_token_first=self.broker is not None  # only where the harness checks passwords
            and bool(spec.bad_token_share)
            and rng.random() < spec.bad_token_share,
        )
        self.sessions[d] = session
        # Chosen for a kill, a wrong token or the probe: then it must be judged.
        self._asked["kill_share"] |= kill_at is not None
        self._asked["bad_token_share"] |= session.bad_token_first
        self._asked["isolation_probe"] |= not session.probed
        session.started_at = time.monotonic()
        assert self.observer is not None
        self.observer.watch(d, dev.cohort.name)
        session.start()

    async def play(self, windows: Iterable[FaultWindow], start: float) -> None:
        """The broker's own fault windows: stopped (``down``) or killed and restarted."""
        for w in sorted(windows, key=lambda w: w.start_s):
            await asyncio.sleep(max(start + w.start_s - time.monotonic(), 0))
            if self.stopping.is_set() or self.broker is None:
                return
            before = {d for d in self._online if not self.sessions[d].killed}
            loss = {
                "window": w.text,
                "at_s": round(time.monotonic() - start, 3),
                "down_s": w.duration_s,
                "devices": len(before),
                "connects": 0,
                "back_after_s": None,
                "not_back": len(before),
                "_waiting": before,
            }
            self._recovery.append(loss)
            loss["_down"] = time.monotonic()
            if self.observer is not None:  # what is in flight now may die with the broker
                self.observer.broker_lost()
            if w.restart:
                await asyncio.to_thread(self.broker.kill)
            else:
                await asyncio.to_thread(self.broker.stop)
            await asyncio.sleep(w.duration_s)
            await asyncio.to_thread(self.broker.start)
            loss["_up"] = time.monotonic()
            self._back(loss)

    # --- credentials -----------------------------------------------------------------------
    async def grant(self, username: str, password: str) -> None:
        """The broker accepts ``password`` for ``username`` once this returns (a no-op on a
        broker of the user's: its passwords are not the harness's to write)."""
        if self.credentials is not None:
            await self.credentials.grant(username, password)

    # --- the token refresh -----------------------------------------------------------------------
    async def refresh(self, session: DeviceSession) -> Tokens | None:
        """``POST /api/v1/pair/token/refresh``, judged: a 200 with a good access token for the
        same device, or a ``token_refresh`` violation."""
        stats, judged = self.stats, self.judge.judged
        self.judge.results.check("token_refresh")  # in the report even if a window took all
        refuses = self.judge.profile.build.refresh_refuses_aud
        stats.refresh_expected = "401" if refuses else "200"
        body = json.dumps({"refresh_token": session.tokens.refresh}).encode()
        t0 = time.monotonic()
        problem: str | None = None
        tokens = None
        try:
            response = await self.transport.post(
                REFRESH_PATH, body, [("Content-Type", "application/json")]
            )
        except TransportError as exc:
            key = silence_key(exc)
            problem = key.replace("_", " ")
        else:
            key = str(response.status)
            if refuses:  # v5: PyJWT refuses the token's aud, so every refresh is this 401
                if response.status != 401 or REFRESH_REFUSAL not in response.body:
                    problem = f"{response.status}, not v5's 401 {REFRESH_REFUSAL.decode()!r}"
            elif response.status != 200:
                problem = f"{response.status}"
            else:
                tokens, problem = self._new_tokens(session, response.body)
        t1 = time.monotonic()
        stats.refresh_latency.record(t1 - t0)
        stats.refresh_outcomes[key] += 1
        stats.counts["refreshes"] += 1
        if tokens is None:
            stats.counts["refresh_failures"] += 1
        faults = self.judge.faults
        if problem is not None and faults is not None and faults.at(t0, t1) is not None:
            stats.counts["refreshes_in_fault_windows"] += 1  # the window's, not the server's
            return None
        if problem is None:
            judged("token_refresh", True)
        else:
            cohort = self.observer.cohorts.get(session.d, "") if self.observer else ""
            expected = "v5's 401" if refuses else "200 with a new access token"
            ex = example(session.d, cohort, expected, problem, "token_refresh")
            judged("token_refresh", False, ex)
        return tokens

    def _new_tokens(self, session: DeviceSession, body: bytes) -> tuple[Tokens | None, str | None]:
        """A refresh's 200: the new access token, or what is wrong with it."""
        try:
            data = json.loads(body)
            access = str(data["access_token"])
            expires_in = float(data["expires_in"])
        except (ValueError, KeyError, TypeError):
            return None, "200 without access_token/expires_in"
        child = str(token_claims(session.tokens.access).get("child_id") or "")
        problem = self.judge.fast_tokens.problems(access, session.d, child)
        if problem is not None:
            return None, problem
        return Tokens(access, session.tokens.refresh, expires_in, time.monotonic()), None

    # --- what sessions report --------------------------------------------------------------------
    def connected(self, session: DeviceSession, session_id: str, code: Any) -> None:
        counts = self.stats.counts
        counts["connect_attempts"] += 1
        counts["sessions"] += 1
        if session.d not in self._order:
            self._order.append(session.d)
            counts["sessions_connected"] += 1
        self.stats.connacks[reason_name(code)] += 1
        session.session_id = session_id
        session.last_refusal = None  # answered: what refused it before is history
        if session.bad_token_pending:  # a wrong token let in: the broker checks no passwords
            session.bad_token_pending = session.bad_token_first = False
            assert self.observer is not None
            self.observer.bad_token(session.d, None)
        self._online.add(session.d)
        self.stats.online = len(self._online)
        for loss in self._recovery:
            if session.d in loss["_waiting"]:  # back (maybe before play() saw it was up)
                loss["connects"] += 1
                loss["_waiting"].discard(session.d)
                self._back(loss)
        tokens = session.live_tokens
        if self.credentials is not None and tokens.expires_in:
            left = tokens.got_at + tokens.expires_in - time.monotonic()
            asyncio.get_running_loop().call_later(
                max(left, 0), self.credentials.expire, session.username, tokens.access
            )

    def _back(self, loss: dict[str, Any]) -> None:
        loss["not_back"] = len(loss["_waiting"])
        if not loss["_waiting"] and loss.get("back_after_s") is None and "_up" in loss:
            loss["back_after_s"] = round(time.monotonic() - loss["_up"], 3)

    def refused(self, session: DeviceSession, code: Any) -> None:
        session.last_refusal = reason_name(code)
        self.stats.counts["connect_attempts"] += 1
        self.stats.connacks[reason_name(code)] += 1
        for loss in self._recovery:  # the attempts it took the devices it took to come back
            if session.d in loss["_waiting"]:
                loss["connects"] += 1
        if session.bad_token_pending and code != "no connection":  # a CONNACK refused it
            session.bad_token_pending = session.bad_token_first = False
            assert self.observer is not None
            self.observer.bad_token(session.d, reason_name(code))

    def lost(self, session: DeviceSession) -> None:
        self.stats.counts["connection_losses"] += 1
        self._offline(session)
        if self.observer is not None and session.session_id:
            self.observer.session_lost(session.d, session.session_id)

    def born(self, session: DeviceSession, session_id: str) -> None:
        self.stats.counts["births_acked"] += 1
        assert self.observer is not None
        self.observer.birth_acked(session.d, session_id)

    def heartbeat(self, session: DeviceSession, seq: int) -> None:
        self.stats.counts["heartbeats_sent"] += 1
        assert self.observer is not None
        self.observer.heartbeat_acked(session.d, seq)

    def killed(self, session: DeviceSession, session_id: str) -> None:
        self._offline(session)
        for loss in self._recovery:  # cut on purpose: not expected back
            if session.d in loss["_waiting"]:
                loss["_waiting"].discard(session.d)
                loss["devices"] -= 1
                self._back(loss)
        assert self.observer is not None
        self.observer.session_killed(session.d, session_id)

    def closed(self, session: DeviceSession, session_id: str) -> None:
        self._offline(session)
        if self.observer is not None:
            self.observer.session_closed(session.d, session_id)

    def _offline(self, session: DeviceSession) -> None:
        self._online.discard(session.d)
        self.stats.online = len(self._online)

    def probed(self, session: DeviceSession, refused: str | None) -> None:
        if not self.acl:
            return  # nobody said this broker has an ACL: the probe's outcome is not judged
        assert self.observer is not None
        self.observer.probed(session.d, session.session_id or "", refused)

    def peer(self, session: DeviceSession) -> str | None:
        """Another online device, whose topic this one must not be able to publish under."""
        for d in reversed(self._order):
            if d != session.d:
                return d
        return None

    def _connect_verdicts(self) -> None:
        """``mqtt_connect``: every device that claimed got online. One whose claim came too
        late to connect before the end (``CONNECT_GRACE_S``) is counted, not judged."""
        judged, end = self.judge.judged, time.monotonic()
        self.judge.results.check("mqtt_connect")  # in the report even with no session
        for d, session in sorted(self.sessions.items()):
            if session.ever_connected:
                judged("mqtt_connect", True)
            elif end - session.started_at < CONNECT_GRACE_S:
                self.stats.counts["unobserved"] += 1
            else:
                cohort = self.observer.cohorts.get(d, "") if self.observer else ""
                got = session.last_refusal or "no connection accepted"
                ex = example(d, cohort, "online (CONNACK Success)", got)
                self.judge.judged("mqtt_connect", False, ex)

    def _stranded(self) -> tuple[list[str], bool]:
        """Who is off the broker at the end with no broker answer since: devices whose
        last attempt got no connection at all, and whether the observer is still cut off.
        A broker loss nobody declared must fail the run, not leave it nothing to judge;
        losses in declared windows are ``_reconnect_verdicts``' (their devices excluded)."""
        waiting: set[str] = set()
        for loss in self._recovery:
            waiting |= loss.get("_waiting", set())
        devices = sorted(
            d
            for d, s in self.sessions.items()
            if s.ever_connected
            and not s.online
            and not s.killed
            and s.last_refusal == "no connection"
            and d not in waiting
        )
        observer = self.observer
        cut_off = observer is not None and observer.blind_until == math.inf and not waiting
        return devices, cut_off

    def _stranded_verdicts(self, devices: list[str], observer_cut_off: bool) -> None:
        for d in devices:
            cohort = self.observer.cohorts.get(d, "") if self.observer else ""
            got = "lost it, and no CONNACK since (no declared broker window)"
            self.judge.judged(RECONNECT_CHECK, False, example(d, cohort, "online", got))
        if observer_cut_off:
            got = "cut off at the end: nothing after its loss could be checked"
            ex = {
                "device_id": "-",
                "cohort": "",
                "scenario": "mqtt_session",
                "expected": "the observer on the broker",
                "got": got,
            }
            self.judge.judged(RECONNECT_CHECK, False, ex)

    def _exercised(self) -> None:
        """A share the fleet asked for that nothing exercised fails its check: a run too
        short for its kills, say, must not pass on zero evaluations."""
        for key, check_name in (
            ("kill_share", "mqtt_last_will"),
            ("bad_token_share", "mqtt_auth"),
            ("isolation_probe", "mqtt_isolation"),
        ):
            check = self.judge.results.check(check_name)
            if self._asked[key] and check.evaluated + check.violations == 0:
                self.judge.judged(
                    check_name,
                    False,
                    {
                        "device_id": "-",
                        "cohort": "",
                        "scenario": "mqtt_session",
                        "expected": f"{key} exercised",
                        "got": "never: the run ended first (hold longer: --mqtt-hold)",
                    },
                )

    def _reconnect_verdicts(self) -> None:
        for loss in self._recovery:
            waiting = loss.pop("_waiting", set())
            loss.pop("_up", None)
            loss.pop("_down", None)
            loss["not_back"] = len(waiting)
            for d in sorted(waiting):
                cohort = self.observer.cohorts.get(d, "") if self.observer else ""
                expected = "back online after " + loss["window"]
                ex = example(d, cohort, expected, "not back by the end")
                self.judge.judged(RECONNECT_CHECK, False, ex)
            if not waiting:
                self.judge.judged(RECONNECT_CHECK, True)
            self.stats.reconnects.append(loss)
