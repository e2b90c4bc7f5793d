"""FastAPI app factory: the HTTP face of the claim service.

FastAPI because the v5 server is FastAPI (error shapes, headers, behaviour of
unknown routes and wrong methods). Claim bodies are validated by hand (see
``validation``) for fidelity to the v5 rules and for speed. A pure ASGI wrapper
adds ``X-Correlation-Id`` to every response, including unexpected 500s, writes
the one log line per request, and answers ``POST`` claims itself (measured:
0.33 instead of 0.52 ms of CPU per claim; a test holds it to the route's answers).
"""

from __future__ import annotations

import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from harness import __version__
from harness.protocol.claim import CLAIM_PATH, REFRESH_PATH
from harness.server.claims import DEFAULT_HOST, ClaimService, Outcome, request_origin, shaped
from harness.server.config import ServerConfig
from harness.server.logs import RequestLog, elapsed_ms
from harness.server.metrics import ServerMetrics
from harness.server.stores import StoreUnavailable
from harness.server.stores.nonce import nonce_store_for
from harness.server.stores.registry import registry_for
from harness.server.validation import is_json_content_type, json_body

_CID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_JSON = "application/json"


class ServerState:
    """Stores, service, metrics and log of one server; opened before it serves."""

    def __init__(self, config: ServerConfig, host: str = DEFAULT_HOST) -> None:
        """``host``: the address it listens on (v5's HOST, in the claims' device_config)."""
        self.config = config
        self.metrics = ServerMetrics()
        self.nonces = nonce_store_for(config.redis_url, config.redis_outage)
        self.registry = registry_for(config.database_url, config.migrate)
        self.service = ClaimService(config, self.nonces, self.registry, self.metrics, host)
        self.log = RequestLog(config.log_file)
        self.opened = False
        self.warnings: list[str] = []

    async def open(self) -> None:
        """Connect the stores and load the seed; raises ``StoreUnavailable`` on failure."""
        await self.registry.open()
        try:
            await self.registry.load_seed(self.config.seed)
            await self.nonces.open()
        except BaseException:
            await self.registry.close()
            raise
        self.opened = True
        self.warnings = []
        if self.config.redis_outage is not None:  # pinging would spend its one good answer
            self.warnings.append(f"redis outage declared ({self.config.redis_outage})")
        else:  # Redis down at start is a state the flags handle, not a start-up error
            try:
                await self.nonces.ping()
            except StoreUnavailable as exc:
                self.warnings.append(f"{exc.store} unreachable at start ({exc.reason})")
        # Lifecycle lines go to log files only: on a terminal the start line says it.
        if self.log.target not in (None, "-"):
            self.log.write(
                "server_start",
                warnings=self.warnings,
                flags=self.config.flags.on(),
                stores=self.config.describe_stores(),
                profile=self.config.profile_notes(),
                devices=len(self.config.seed.devices),
                children=len(self.config.seed.children),
            )

    async def close(self) -> None:
        if self.opened and self.log.target not in (None, "-"):
            self.log.write("server_stop")
        self.opened = False
        try:
            await self.nonces.close()
        finally:
            await self.registry.close()
            self.log.close()


class CorrelationAndLog:
    """ASGI wrapper: correlation ID on every response, one JSON log line per request.

    It also answers ``POST /api/v1/pair/claim`` itself, byte for byte what the
    FastAPI route would send: the routing/dependency layers cost more than the
    claim (measured 2x throughput); every other request, and other methods on
    the claim path (405), go through FastAPI.
    """

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state
        # The bare router: no ErrorContextMiddleware, so no correlation ID but the 200s' own.
        self.bare = state.config.bare_router

    async def _claim(
        self, scope: dict[str, Any], receive: Any, send: Any, ctx: dict[str, Any]
    ) -> None:
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
                break
        service = self.state.service
        origin = None
        if service.wants_origin:  # v5-head's device_config: the request's host and scheme
            origin = request_origin(scope["headers"], scope.get("scheme", "http"))
        out = await service.claim(b"".join(chunks), is_json_content_type(content_type), origin)
        ctx["outcome"] = out.outcome
        ctx.update(out.log)
        body, extra = shaped(out, self.bare)
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": out.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        cid = ""
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                cid = value.decode("latin-1")
                break
        if not _CID_OK.fullmatch(cid):
            cid = str(uuid.uuid4())
        ctx: dict[str, Any] = {"correlation_id": cid}
        scope["harness.ctx"] = ctx
        cid_header = (b"x-correlation-id", cid.encode())
        status = 0

        bare = self.bare

        async def send_with_cid(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if not bare:
                    message = {**message, "headers": [*message.get("headers", ()), cid_header]}
            await send(message)

        try:
            if scope["method"] == "POST" and scope["path"] == CLAIM_PATH:
                await self._claim(scope, receive, send_with_cid, ctx)
            else:
                await self.app(scope, receive, send_with_cid)
        except Exception as exc:
            ctx["error"] = type(exc).__name__
            ctx["trace"] = traceback.format_exc(limit=3)[-600:]
            if status == 0:
                status = 500
                body = json_body({"detail": "Internal Server Error"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            cid_header,
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            if self.state.log.enabled:
                self.state.log.write(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=elapsed_ms(start),
                    **ctx,
                )


def _respond(request: Request, out: Outcome, bare_router: bool) -> Response:
    ctx = request.scope.get("harness.ctx")
    if ctx is not None:
        ctx["outcome"] = out.outcome
        ctx.update(out.log)
    body, headers = shaped(out, bare_router)
    return Response(body, out.status, headers=headers or None, media_type=_JSON)


def _health(ok: bool, **extra: Any) -> Response:
    body = {"status": "ok" if ok else "unavailable", **extra}
    return Response(json_body(body), 200 if ok else 503, media_type=_JSON)


def create_app(config: ServerConfig | None = None, state: ServerState | None = None) -> FastAPI:
    """Build the FastAPI app for one server; ``app.state.server`` is its ``ServerState``.

    When run by plain uvicorn the lifespan opens the stores; the embedded runner
    and ``harness serve`` open them first so a start-up failure is one clear error.
    """
    state = state or ServerState(config or ServerConfig())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned = not state.opened
        if owned:
            await state.open()
        try:
            yield
        finally:
            if owned:
                await state.close()

    api = FastAPI(
        title="teddy v5 reference claim server",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        # No OpenTelemetry: this server has its own /metrics, and the per-request
        # provider check showed up in the profile.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.state.server = state
    service = state.service
    bare = state.config.bare_router

    @api.post(CLAIM_PATH)
    async def claim(request: Request) -> Response:
        json_content = is_json_content_type(request.headers.get("content-type"))
        origin = None
        if service.wants_origin:
            origin = request_origin(request.scope["headers"], request.url.scheme)
        out = await service.claim(await request.body(), json_content, origin)
        return _respond(request, out, bare)

    @api.post(REFRESH_PATH)
    async def refresh(request: Request) -> Response:
        json_content = is_json_content_type(request.headers.get("content-type"))
        return _respond(request, service.refresh(await request.body(), json_content), bare)

    @api.get("/health")
    async def health() -> Response:
        return _health(True, version=__version__)

    async def store_health(store: Any) -> Response:
        try:
            await store.ping()
        except StoreUnavailable as exc:
            return _health(False, backend=store.backend, error=exc.reason)
        return _health(True, backend=store.backend)

    @api.get("/health/db")
    async def health_db() -> Response:
        return await store_health(state.registry)

    @api.get("/health/redis")
    async def health_redis() -> Response:
        return await store_health(state.nonces)

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    # User middleware sits inside Starlette's ServerErrorMiddleware; this one catches
    # exceptions itself, so even a 500 carries the correlation ID and is logged.
    api.add_middleware(CorrelationAndLog, state=state)
    return api
