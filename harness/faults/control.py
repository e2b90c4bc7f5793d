"""The fault proxy's HTTP control API: read and switch the mode from another process.

A Starlette app served by uvicorn on the proxy's own event loop, so a request
changes the mode with no locking and no thread hop:

    GET  /health  -> 200 {"status": "ok"}
    GET  /mode    -> 200 {"mode": "pass", "stats": {...}}
    PUT  /mode    {"mode": "reset@0.5"} or the text itself -> 200 as GET, 422 {"error": "..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from harness.errors import HarnessInputError
from harness.faults.modes import parse_mode
from harness.faults.proxy import FaultProxy

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def _state(proxy: FaultProxy) -> dict[str, Any]:
    return {"mode": proxy.mode.text, "stats": proxy.stats.as_dict()}


def _mode_text(body: bytes, content_type: str) -> str:
    """The mode from a JSON ``{"mode": ...}`` (or a JSON string) or from a plain-text body."""
    text = body.decode("utf-8", errors="replace").strip()
    if "json" not in content_type and not text.startswith(("{", '"')):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        raise HarnessInputError("body", 'is not JSON; send {"mode": "drop"}') from None
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and isinstance(data.get("mode"), str):
        return str(data["mode"])
    raise HarnessInputError("body", 'needs a "mode" string, e.g. {"mode": "drop"}')


def control_app(proxy: FaultProxy) -> Starlette:
    """The control API for one proxy; it must be served on that proxy's loop."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def get_mode(request: Request) -> JSONResponse:
        return JSONResponse(_state(proxy))

    async def put_mode(request: Request) -> JSONResponse:
        try:
            text = _mode_text(await request.body(), request.headers.get("content-type", ""))
            proxy.set_mode(parse_mode(text))
        except HarnessInputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(_state(proxy))

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/mode", get_mode, methods=["GET"]),
            Route("/mode", put_mode, methods=["PUT", "POST"]),
        ]
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the command that embeds it owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """The control API listening on ``host:port`` (``port=0`` picks a free one)."""

    def __init__(self, proxy: FaultProxy, host: str = "127.0.0.1", port: int = 0) -> None:
        self.proxy = proxy
        self.host = host
        self._requested_port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ControlServer.port is known only after start()")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind first (so a taken port is one clear error and port 0 is known), then serve."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise HarnessInputError(
                "control",
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}",
            ) from None
        self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            control_app(self.proxy),
            host=self.host,
            port=self._port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                sock.close()
                raise HarnessInputError("control", "the control API did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT_S)
        except Exception:  # a timeout or a server that already failed: nothing to keep
            task.cancel()
