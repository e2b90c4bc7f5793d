"""A recording TCP forwarder for tests: every byte a client and a server exchanged, so a
test knows each nonce, HMAC and token of a run and can grep the harness's outputs for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from typing import Self

START_TIMEOUT_S = 10.0
_JSON = re.compile(rb"\{.*\}", re.S)


class Capture:
    """Listens on a free port, forwards to ``upstream``, keeps both directions' bytes."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("capture forwarder did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _main(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)  # resets are the point here
        self._server = loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        self._server.close()
        loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        sent, got = bytearray(), bytearray()
        await asyncio.gather(self._pipe(reader, up_writer, sent),
                             self._pipe(up_reader, writer, got))  # fmt: skip
        self.requests.append(bytes(sent))
        self.responses.append(bytes(got))

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                keep += chunk
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    def secrets(self) -> set[str]:
        """Every nonce, HMAC and token that crossed, as the wire carried them."""
        found: set[str] = set()
        for raw in self.requests + self.responses:
            body = _JSON.search(raw)
            if body is None:
                continue
            try:
                data = json.loads(body.group(0))
            except ValueError:
                continue  # a response cut mid-body
            if isinstance(data, dict):
                for key in ("nonce", "hmac_hex", "access_token", "refresh_token"):
                    value = data.get(key)
                    if isinstance(value, str) and len(value) >= 16:
                        found.add(value)
        return found
