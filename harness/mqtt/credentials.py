"""The harness as the embedded broker's authentication backend.

Mosquitto cannot verify a JWT, so before a device connects its access token is
written to the broker's password file as its password (``grant``). Grants that
arrive close together share one reload (``GRANT_BATCH_S``: a SIGHUP makes
Mosquitto re-check every connected client), a canary user whose password changes
with every reload proves the broker has read the file before anyone is told it
may connect, and a token is revoked when it expires (``expire``), so a device
still holding it is refused at CONNACK and Mosquitto's reload drops its session.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttError

from harness.mqtt.broker import MosquittoBroker
from harness.mqtt.client import CLIENT_LOG, DeviceClient, settle

CANARY_USER = "harness-canary"  # its password changes with every reload: the reload barrier
GRANT_BATCH_S = 0.25
RELOAD_WAIT_S = 5.0


class BrokerCredentials:
    """Who may connect to ``broker`` with which password, batched into reloads."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self._granted: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._revoke: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def grant(self, username: str, password: str) -> None:
        """The broker accepts ``password`` for ``username`` once this returns."""
        if self._granted.get(username) == password:
            return
        self._pending[username] = password
        self._revoke.discard(username)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick()
        await waiter

    def expire(self, username: str, password: str) -> None:
        """``password`` expired: revoked, unless ``username`` has a newer one by now."""
        if self._granted.get(username) == password:
            self._revoke.add(username)
            self._kick()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _kick(self) -> None:
        if not self._flushing:
            self._flushing = True
            task = asyncio.get_running_loop().create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        broker = self.broker
        try:
            while self._pending or self._revoke:
                await asyncio.sleep(GRANT_BATCH_S)
                batch, self._pending = self._pending, {}
                revoke, self._revoke = self._revoke, set()
                waiters, self._waiters = self._waiters, []
                canary = os.urandom(12).hex()
                await asyncio.to_thread(
                    broker.set_passwords, {**batch, CANARY_USER: canary}, revoke
                )
                for user in revoke:
                    self._granted.pop(user, None)
                self._granted.update(batch)
                if broker.running:
                    await self._reloaded(canary)
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        finally:
            self._flushing = False

    async def _reloaded(self, canary: str) -> None:
        """The barrier: the canary's new password works, so the whole file was read."""
        deadline = time.monotonic() + RELOAD_WAIT_S
        broker = self.broker
        while time.monotonic() < deadline and broker.running:
            try:
                client = DeviceClient(
                    broker.host,
                    broker.port,
                    username=CANARY_USER,
                    password=canary,
                    identifier=f"{CANARY_USER}-{uuid.uuid4().hex[:6]}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    timeout=2.0,
                    logger=CLIENT_LOG,
                )
                try:
                    async with client:
                        return
                finally:
                    settle(client)
            except MqttError:
                await asyncio.sleep(0.01)
