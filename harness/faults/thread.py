"""``ProxyThread``: a ``FaultProxy`` on its own event loop in a daemon thread.

For synchronous callers (redis-py, urllib, a pytest test, the embedded server
in thread mode) that have no event loop to run the proxy in. Every call hops
onto the proxy's loop and waits for it, so a mode set here is in force when
``set_mode`` returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from harness.faults.modes import Mode, as_mode
from harness.faults.proxy import FaultProxy, ProxyStats

T = TypeVar("T")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class ProxyThread:
    """The same proxy and arguments as ``FaultProxy``; ``start()`` returns once it listens."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.proxy = FaultProxy(upstream_host, upstream_port, host=host, port=port, seed=seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the loop thread and the proxy; a bind error is raised here, in the caller."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="fault-proxy", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self.proxy.start(), START_TIMEOUT_S)
        except BaseException:
            self._halt()
            raise
        return self

    def stop(self) -> None:
        """Close every connection and the listener, then end the thread; safe to call twice."""
        if self._thread is None:
            return
        try:
            self._call(self.proxy.stop(), STOP_TIMEOUT_S)
        finally:
            self._halt()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def address(self) -> str:
        return self.proxy.address

    @property
    def mode(self) -> Mode:
        return self.proxy.mode

    def set_mode(self, mode: Mode | str) -> None:
        """Parse here (bad text raises in the caller), apply on the proxy's loop, wait for it."""
        parsed = as_mode(mode)
        if self._loop is None:
            self.proxy.set_mode(parsed)
            return

        async def apply() -> None:
            self.proxy.set_mode(parsed)

        self._call(apply(), STOP_TIMEOUT_S)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot taken on the proxy's loop, so its counters agree with each other."""
        if self._loop is None:
            return self.proxy.stats

        async def snapshot() -> ProxyStats:
            return self.proxy.stats

        return self._call(snapshot(), STOP_TIMEOUT_S)

    # -- the loop thread ----------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _halt(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
