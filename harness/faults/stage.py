"""The stage of a faulted soak: real stores behind fault proxies, and the windows on time.

On the embedded server a fault window needs real parts to cut: a memory store
cannot lose its connection. So the stage starts a real ``redis-server`` (always:
a restarted server must find its nonces again, as a deployed one does) and a
real PostgreSQL when a window cuts it, puts a fault proxy in front of each and
of the claim server, and points the server at the proxies. Against a
``--target`` only the server's own proxy is the harness's; its stores are the
operator's (``harness fault-proxy`` in front of them).

``play`` applies each window at its time and tells the fault judge when it
really began and ended, so the rows are judged against what happened, not
against the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from urllib.parse import urlsplit

from harness.errors import HarnessInputError
from harness.faults.modes import Pass
from harness.faults.phases import FaultJudge
from harness.faults.thread import ProxyThread
from harness.faults.windows import FaultWindow
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer, Mode
from harness.services import PostgresServer, RedisServer


class FaultStage:
    """Starts and stops the parts; ``url`` is where the fleet claims (the server's proxy)."""

    def __init__(
        self,
        windows: tuple[FaultWindow, ...],
        config: ServerConfig | None,
        target: str | None = None,
        mode: Mode = "process",
    ) -> None:
        self.windows = windows
        self.config = config  # None: a --target
        self.target = target
        self.mode = mode
        self.proxies: dict[str, ProxyThread] = {}
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.server: EmbeddedServer | None = None
        self.url = ""
        targets = {w.target for w in windows}
        if target is not None and any(w.restart for w in windows):
            raise HarnessInputError("--fault", "only the embedded server can be restarted")
        if target is not None and targets - {"server"}:
            raise HarnessInputError(
                "--fault",
                "against a --target only the server can be faulted here; put `harness "
                "fault-proxy` in front of its Redis or PostgreSQL and drive it",
            )

    def start(self) -> FaultStage:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        targets = {w.target for w in self.windows}
        if self.config is None:  # a --target: only its front door is ours
            parts = urlsplit(self.target or "")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            front = self._proxy("server", parts.hostname or "127.0.0.1", port)
            self.url = f"{parts.scheme}://127.0.0.1:{front.port}{parts.path.rstrip('/')}"
            return
        self.redis = RedisServer().start()
        redis = self._proxy("redis", self.redis.host, self.redis.port)
        config = replace(self.config, redis_url=f"redis://127.0.0.1:{redis.port}/0")
        if "postgres" in targets:
            self.postgres = PostgresServer().start()
            database = self.postgres.create_database("claims")
            db = self._proxy("postgres", self.postgres.host, self.postgres.port)
            config = replace(config, database_url=database.replace(
                f":{self.postgres.port}/", f":{db.port}/"), migrate=True)  # fmt: skip
        self.config = config
        self.server = EmbeddedServer(config, mode=self.mode).start()
        front = self._proxy("server", "127.0.0.1", self.server.port)
        self.url = f"http://127.0.0.1:{front.port}"

    def _proxy(self, name: str, host: str, port: int) -> ProxyThread:
        proxy = self.proxies[name] = ProxyThread(host, port).start()
        return proxy

    @property
    def jwt_secret(self) -> str | None:
        return self.config.jwt_secret if self.config is not None else None

    def stop(self) -> None:
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        if self.server is not None:
            self.server.stop()
        for part in (self.postgres, self.redis):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()

    # --- the windows -------------------------------------------------------------------------
    async def play(self, judge: FaultJudge, start: float) -> None:
        """Each window at its time, in order; cancelled with the run."""
        now = time.monotonic
        # At the same moment a window's end comes before the next one's start, so that
        # ending the first cannot undo the second.
        events = sorted(
            [(w.start_s, 1, w) for w in self.windows] + [(w.end_s, 0, w) for w in self.windows],
            key=lambda e: (e[0], e[1]),
        )
        try:
            for at, beginning, w in events:
                delay = start + at - now()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not beginning:
                    await self._end(w)
                    judge.ended(w, now())
                else:
                    judge.began(w, now())
                    await self._begin(w)
        finally:  # a run that ends inside a window leaves nothing cut behind
            for proxy in self.proxies.values():
                with contextlib.suppress(Exception):
                    proxy.set_mode(Pass())

    async def _begin(self, w: FaultWindow) -> None:
        if w.restart:
            server = self.server
            assert server is not None
            await asyncio.to_thread(server.stop)
            return
        self.proxies[w.target].set_mode(w.proxy_mode)

    async def _end(self, w: FaultWindow) -> None:
        if w.restart:
            old = self.server
            assert old is not None and self.config is not None
            self.server = EmbeddedServer(self.config, port=old.port, mode=self.mode)
            await asyncio.to_thread(self.server.start)
            return
        self.proxies[w.target].set_mode(Pass())
