"""One claimed device online: its MQTT connection, birth, heartbeats, commands, refresh.

A device connects with client ID = its normalised ID (``<d>``, the token's
``device_id``), username = the ID it claimed with and password = its access
token; its last will is a retained ``offline`` on its status topic. Once
accepted it publishes a retained ``online`` birth, subscribes to its command
topic, answers ``ping``, heartbeats at QoS 1, and tries once to publish under
another device's topics (the broker must refuse it). Before its token expires it
refreshes it (``SessionHub.refresh``) and reconnects with the new one. A lost
connection is retried with the firmware's recovery back-off (``backoff``).

The sequence number advances only on a PUBACK: a heartbeat whose PUBACK was lost
with the connection is sent again with the same number, so the observer counts a
duplicate, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
from aiomqtt.exceptions import MqttConnectError, MqttError

from harness.mqtt.client import (
    CLIENT_LOG,
    CONNECT_TIMEOUT_S,
    DeviceClient,
    reason_name,
    settle,
    until_lost,
)
from harness.mqtt.spec import (
    RECONNECT_BASE_S,
    RECONNECT_CAP_S,
    RECONNECT_JITTER,
    REFRESH_BUFFER_S,
    SessionSpec,
)
from harness.mqtt.topics import Topics

KEEPALIVE_S = 60


def backoff(errors: int, scale: float, rng: random.Random) -> float:
    """The firmware's recovery wait after ``errors`` failures in a row (``state_machine.c``
    counts the failure, then waits ``2^errors`` s: 2 s after the first), with the claim
    path's ±25% jitter, never over its 60 s cap; times the cohort's ``time_scale``."""
    base = RECONNECT_BASE_S * (1 << min(errors, 16))
    jittered = base * (1.0 + rng.uniform(-RECONNECT_JITTER, RECONNECT_JITTER))
    return min(jittered, RECONNECT_CAP_S) * scale


@dataclass(slots=True)
class Tokens:
    """What a claim (or a refresh) gave the device."""

    access: str
    refresh: str | None
    expires_in: float
    got_at: float  # monotonic

    def expired(self) -> bool:
        return bool(self.expires_in) and time.monotonic() >= self.got_at + self.expires_in

    def refresh_due(self) -> float:
        """When the firmware refreshes: 60 s before expiry, or at half-life for short tokens."""
        lead = REFRESH_BUFFER_S if self.expires_in > 2 * REFRESH_BUFFER_S else self.expires_in / 2
        return self.got_at + self.expires_in - lead


class SessionHub(Protocol):
    """What a session reports to and asks of the run's MQTT side (``harness.mqtt.fleet``)."""

    host: str
    port: int
    topics: Topics
    stopping: asyncio.Event
    acl: bool  # the broker keeps devices to their own topics: probe it

    async def grant(self, username: str, password: str) -> None: ...
    async def refresh(self, session: DeviceSession) -> Tokens | None: ...
    def connected(self, session: DeviceSession, session_id: str, code: Any) -> None: ...
    def refused(self, session: DeviceSession, code: Any) -> None: ...
    def lost(self, session: DeviceSession) -> None: ...
    def born(self, session: DeviceSession, session_id: str) -> None: ...
    def heartbeat(self, session: DeviceSession, seq: int) -> None: ...
    def killed(self, session: DeviceSession, session_id: str) -> None: ...
    def closed(self, session: DeviceSession, session_id: str) -> None: ...
    def probed(self, session: DeviceSession, refused: str | None) -> None: ...
    def peer(self, session: DeviceSession) -> str | None: ...


class DeviceSession:
    """One device's MQTT life from its first claim to the run's end."""

    def __init__(
        self,
        hub: SessionHub,
        d: str,
        username: str,
        firmware_version: str,
        spec: SessionSpec,
        tokens: Tokens,
        heartbeat_s: float,
        rng: random.Random,
        kill_at: float | None = None,
        bad_token_first: bool = False,
    ) -> None:
        self.hub = hub
        self.d = d
        self.username = username
        self.firmware_version = firmware_version
        self.spec = spec
        self.tokens = tokens
        self.heartbeat_s = heartbeat_s
        self.rng = rng
        self.kill_at = kill_at  # monotonic: when this session is cut (None: never)
        self.bad_token_first = bad_token_first
        self.seq = 0
        self.online = False
        self.killed = False
        self.probed = not (spec.isolation_probe and hub.acl)  # only where it is judged
        self.errors = 0  # failed connects in a row
        self.ever_connected = False
        self.task: asyncio.Task[None] | None = None
        self.session_id: str | None = None  # the current (or last) connection's
        self.live_tokens = tokens  # the tokens this connection's password came from
        self.bad_token_pending = False  # connecting with the wrong token right now
        self.started_at = time.monotonic()  # when its first claim's 200 came
        self.last_refusal: str | None = None  # the last CONNACK reason that refused it

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def new_tokens(self, tokens: Tokens) -> None:
        """A later claim (or a refresh) gave new tokens: the next connect uses them."""
        self.tokens = tokens

    # --- the life ------------------------------------------------------------------------
    async def run(self) -> None:
        hub = self.hub
        while not hub.stopping.is_set() and not self.killed:
            self.live_tokens = tokens = self.tokens  # a claim may replace them meanwhile
            password = tokens.access
            if self.bad_token_first:  # until a CONNACK answers it
                password = "not-" + password[-8:]  # a wrong token: refused at CONNACK
                self.bad_token_pending = True
            elif not tokens.expired():  # an expired token is not granted again
                await hub.grant(self.username, password)
            try:
                again = await self._connected(password)
            except MqttConnectError as exc:
                hub.refused(self, exc.rc)
            except (MqttError, OSError, TimeoutError):
                if self.online:
                    hub.lost(self)
                else:
                    hub.refused(self, "no connection")
            else:
                if again:
                    continue  # a refreshed token: reconnect with it at once
                return
            finally:
                self.online = False
            if hub.stopping.is_set() or self.killed:
                return
            self.errors += 1
            delay = backoff(self.errors, self.spec.time_scale, self.rng)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.stopping.wait(), delay)

    def _payload(self, state: str, session_id: str) -> bytes:
        return json.dumps(
            {"state": state, "firmware_version": self.firmware_version, "session_id": session_id}
        ).encode()

    async def _connected(self, password: str) -> bool:
        """One connection; True when it ended to reconnect with a refreshed token."""
        hub, topics, d = self.hub, self.hub.topics, self.d
        session_id = str(uuid.uuid4())
        client = DeviceClient(
            hub.host,
            hub.port,
            identifier=d,
            username=self.username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(topics.status(d), self._payload("offline", session_id), 1, True),
            keepalive=KEEPALIVE_S,
            timeout=CONNECT_TIMEOUT_S,
            logger=CLIENT_LOG,
        )
        await client.__aenter__()
        self.online = True
        self.errors = 0
        self.ever_connected = True
        hub.connected(self, session_id, "Success")
        tasks: list[asyncio.Task[Any]] = []
        try:
            await until_lost(client, client.subscribe(topics.command(d), qos=1))
            birth = self._payload("online", session_id)
            await until_lost(client, client.publish(topics.status(d), birth, 1, True))
            hub.born(self, session_id)  # acknowledged: the observer must see it
            loop = asyncio.get_running_loop()
            tasks = [
                loop.create_task(self._heartbeats(client)),
                loop.create_task(self._commands(client)),
                loop.create_task(hub.stopping.wait()),
            ]
            if not self.probed:
                self.probed = True
                tasks.append(loop.create_task(self._probe(client)))
            timer = self._timer(self._refresh_due())
            if timer is not None:
                tasks.append(timer)
            while True:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if self.kill_at is not None and time.monotonic() >= self.kill_at:
                    await self._cut(client, session_id, tasks)
                    return False
                if hub.stopping.is_set():
                    await self._close(client, session_id)
                    return False
                tasks = [t for t in tasks if not t.done()]
                if timer is not None and timer.done():  # the refresh is due
                    if await self._refreshed():
                        hub.closed(self, session_id)
                        await client.__aexit__(None, None, None)
                        return True
                    left = self.tokens.got_at + self.tokens.expires_in - time.monotonic()
                    timer = self._timer(time.monotonic() + max(left / 2, 1.0) if left > 0 else None)
                    if timer is not None:  # failed: keep this session, try again at half the rest
                        tasks.append(timer)
        except BaseException:
            with contextlib.suppress(Exception):
                client.cut()
                await asyncio.wait_for(client.__aexit__(None, None, None), 1.0)
            raise
        finally:
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: two loops failing at once is one loss
                task.cancel()
            settle(client)

    def _timer(self, refresh_at: float | None) -> asyncio.Task[None] | None:
        """A sleep until the refresh or the kill, whichever is first (None: neither)."""
        at = min((t for t in (refresh_at, self.kill_at) if t is not None), default=None)
        if at is None:
            return None
        return asyncio.get_running_loop().create_task(asyncio.sleep(max(at - time.monotonic(), 0)))

    def _refresh_due(self) -> float | None:
        if not self.spec.refresh or not self.tokens.refresh:
            return None
        if self.tokens.got_at + self.tokens.expires_in <= time.monotonic():
            return None  # expired already: nothing to refresh with any more
        return self.tokens.refresh_due()

    async def _refreshed(self) -> bool:
        tokens = await self.hub.refresh(self)
        if tokens is None:
            return False
        self.tokens = tokens
        await self.hub.grant(self.username, tokens.access)
        return True

    async def _heartbeats(self, client: DeviceClient) -> None:
        topic = self.hub.topics.heartbeat(self.d)
        await asyncio.sleep(self.heartbeat_s * self.rng.uniform(0.2, 1.0))  # devices spread
        while True:
            payload = json.dumps({"seq": self.seq, "sent_at": time.time()}).encode()
            await client.publish(topic, payload, qos=1)
            self.hub.heartbeat(self, self.seq)
            self.seq += 1
            await asyncio.sleep(self.heartbeat_s)

    async def _commands(self, client: DeviceClient) -> None:
        reply = self.hub.topics.reply(self.d)
        async for message in client.messages:
            try:
                command = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            except (ValueError, TypeError):
                continue
            if isinstance(command, dict) and command.get("cmd") == "ping":
                answer = {"id": command.get("id"), "cmd": "pong", "sent_at": time.time()}
                await client.publish(reply, json.dumps(answer).encode(), qos=1)

    async def _probe(self, client: DeviceClient) -> None:
        """Publish once under another device's heartbeat topic: the ACL must refuse it."""
        other = self.hub.peer(self)
        if other is None:
            self.probed = False
            return
        before = len(client.puback_failures)
        payload = json.dumps({"probe": "isolation", "from": self.session_id, "seq": -1})
        await client.publish(self.hub.topics.heartbeat(other), payload.encode(), qos=1)
        refusals = client.puback_failures[before:]
        self.hub.probed(self, reason_name(refusals[-1]) if refusals else None)
        await asyncio.Event().wait()  # done: stays pending so the session's wait ignores it

    async def _cut(self, client: DeviceClient, session_id: str, tasks: list[Any]) -> None:
        """Killed: no DISCONNECT, so the broker publishes the will."""
        self.killed = True
        self.hub.killed(self, session_id)
        client.cut()
        # The command loop ends when paho has read the EOF and closed the socket; only then
        # may the context exit (a DISCONNECT queued on a half-closed socket would be noise).
        await asyncio.wait([t for t in tasks if not t.done()][:2], timeout=1.0)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.__aexit__(None, None, None), 1.0)

    async def _close(self, client: DeviceClient, session_id: str) -> None:
        """The run is over: a retained ``offline`` of its own, then a clean DISCONNECT."""
        with contextlib.suppress(MqttError, TimeoutError):
            status = self.hub.topics.status(self.d)
            await client.publish(status, self._payload("offline", session_id), 1, True, timeout=2.0)
        self.hub.closed(self, session_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)
