"""A real HTTP upstream for the fault proxy's tests: asyncio on its own loop in a thread.

Each request gets ``200`` with a 1000-byte body; the connection stays open for
the next request unless the request says ``Connection: close``. It counts the
connections that reached it, so a test can tell "dropped at the proxy" from
"answered by the service".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

BODY = b"x" * 1000
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
KEEP = HEAD + b"\r\n" + BODY
CLOSE = HEAD + b"Connection: close\r\n\r\n" + BODY
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n"
GET_KEEP = b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n"


class HttpUpstream:
    """``start()`` returns once listening on ``port``; ``accepted`` counts connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> HttpUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                close = b"connection: close" in head.lower()
                writer.write(CLOSE if close else KEEP)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def http_upstream() -> Iterator[HttpUpstream]:
    upstream = HttpUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()
