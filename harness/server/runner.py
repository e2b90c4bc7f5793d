"""Run one server on a bound socket under uvicorn (uvloop + httptools), stoppable from outside.

Shared by ``EmbeddedServer`` (thread or child process) and ``harness serve``.
The stores are opened before uvicorn starts so a bad database URL or missing
schema is one clear error, and uvicorn's own signal capture is switched off:
whoever owns the runner decides when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator

import uvicorn

from harness.server.app import ServerState, create_app
from harness.server.config import ServerConfig


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handling, and a main loop a stop request wakes at once.

    uvicorn polls ``should_exit`` every 0.1 s; tests start and stop dozens of
    servers, so the wait is an event here (same ticks otherwise).
    """

    _wake: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving so ``port=0`` has a real port to report at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# The store clients log each reconnect during an outage as a warning with a traceback
# (asyncpg's pool: "Failed to restore the pool connection floor"); the server's own
# request log already says which claim met which store error, so they stay quiet.
QUIET_LOGGERS = ("asyncpg", "redis")


class Runner:
    """One server's life: open stores, serve until asked to stop, close stores."""

    def __init__(self, config: ServerConfig, sock: socket.socket) -> None:
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(logging.NullHandler())
            logger.propagate = False
        self.config = config
        self.sock = sock
        self.state = ServerState(config, str(sock.getsockname()[0]))
        self._server: _Uvicorn | None = None
        self._stop_asked = False

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        try:
            await self.state.open()
            app = create_app(self.config, self.state)
            uv_config = uvicorn.Config(
                app,
                http="httptools",
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                server_header=False,
                proxy_headers=False,
                timeout_graceful_shutdown=2,
            )
            self._server = _Uvicorn(uv_config)
            self._server.should_exit = self._stop_asked
            task = asyncio.ensure_future(self._server.serve(sockets=[self.sock]))
            while not self._server.started and not task.done():
                await asyncio.sleep(0.002)
            if self._server.started and on_ready is not None:
                on_ready()
            await task
        finally:
            await self.state.close()
            self.sock.close()

    def request_stop(self) -> None:
        """Ask uvicorn to finish (call on the runner's loop)."""
        self._stop_asked = True
        if self._server is not None:
            self._server.should_exit = True
            self._server.wake()


def new_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()
