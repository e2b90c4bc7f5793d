"""The claim service: contract steps 1-9 in their order, independent of HTTP.

The order is the contract (the nonce is recorded before the HMAC is checked),
and so are the quirks: with idempotency on, a second identical request that
arrives while the first is still in flight finds the nonce already set with
the same HMAC and carries on, so both get (different) tokens. The atomic switch
closes that window with a short per-claim lock held in the same store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import math
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from harness.masking import mask_id, mask_secret
from harness.profiles import DeviceConfigStyle
from harness.protocol import verify_claim_hmac as _verify
from harness.protocol.tokens import ACCESS_TTL, AUDIENCE, ISSUER, REFRESH_TTL, TOKEN_TYPES
from harness.server.config import ServerConfig
from harness.server.metrics import ServerMetrics
from harness.server.stores import StoreUnavailable
from harness.server.stores.nonce import NonceStore
from harness.server.stores.registry import DeviceRecord, Registry
from harness.server.validation import (
    ClaimFields,
    error_body,
    json_body,
    validate_claim,
    validate_refresh,
)

# The v5 routers' detail strings (the 409 depends on the idempotency mode).
NONCE_USED = {
    False: "Nonce already used - possible replay attack",
    True: "Nonce already used with different signature",
}
CLAIM_ERROR = "Device claiming service error"
# refresh_device_token's: its generic except turns any other failure into the last.
REFRESH_BAD_TYPE = "Invalid token type for refresh"
REFRESH_BAD_CLAIMS = "Invalid refresh token claims"
REFRESH_FAILED = "Token refresh failed"
# What upstream's config.HOST defaults to, for an app run without a known bind address.
DEFAULT_HOST = "0.0.0.0"
LOCK_TTL_S = 10
LOCK_WAIT_S = 5.0
LOCK_POLL_S = 0.002


def _detail(text: str) -> bytes:
    return json_body({"detail": text})


def _error(
    status: int,
    detail: str,
    outcome: str,
    log: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """An HTTPException-style answer; the HTTP layer renders ``detail`` in the profile's shape."""
    return Outcome(status, _detail(detail), outcome, headers or {}, log or {}, detail)


@dataclass(slots=True)
class Outcome:
    """What the HTTP layer sends back, plus masked fields for the request log."""

    status: int
    body: bytes
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    # An error's detail (text, or the 422 error list): the deployed app wraps it.
    detail: Any = None
    # The claim router sets its own X-Correlation-Id on a 200; the refresh router does not.
    router_correlation_id: bool = True


def shaped(out: Outcome, bare_router: bool) -> tuple[bytes, dict[str, str]]:
    """The body and headers the deployed app (or the bare router) sends for an outcome.

    The deployed app's HTTPException handler wraps an error's detail as
    ``{"error": {"code": "HTTP_<status>", "message", "correlation_id"}}`` (a fresh
    UUID, not the header's) and drops the exception's headers; 422s keep FastAPI's
    ``{"detail": [...]}``. The router sets its own ``X-Correlation-Id`` on 200s.
    """
    headers = dict(out.headers)
    if out.status == 200:
        if out.router_correlation_id:
            headers["X-Correlation-Id"] = str(uuid.uuid4())
        return out.body, headers
    if bare_router or out.detail is None or out.status == 422 or out.status == 429:
        return out.body, headers  # 429 is the harness's own rate limit, not v5's
    body = {
        "error": {
            "code": f"HTTP_{out.status}",
            "message": out.detail,
            "correlation_id": str(uuid.uuid4()),
        }
    }
    return json_body(body), {}


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_JWT_HEADER = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


class TokenIssuer:
    """HS256 tokens with the contract's claims (step 7); access tokens live ``access_ttl_s``.

    Signed here directly (standard compact JWS, verified by PyJWT in the tests
    and on refresh) because PyJWT's encode cost ~4x the rest of a claim.
    """

    def __init__(self, secret: str, access_ttl_s: int = ACCESS_TTL) -> None:
        self.secret = secret
        self._key = secret.encode()
        self.access_ttl_s = access_ttl_s

    def _encode(self, claims: dict[str, Any]) -> str:
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = _JWT_HEADER + b"." + payload
        signature = _b64url(hmac.digest(self._key, signing_input, "sha256"))
        return (signing_input + b"." + signature).decode()

    def _token(
        self, kind: str, ttl: int, d: object, c: object, session_id: object, now: int
    ) -> str:
        """IDs as the claim normalised them, or as a refresh token carried them (any JSON)."""
        return self._encode(
            {
                "sub": f"device:{d}:child:{c}",
                "device_id": d,
                "child_id": c,
                "session_id": session_id,
                "type": TOKEN_TYPES[kind],
                "aud": AUDIENCE,
                "iss": ISSUER,
                "iat": now,
                "exp": now + ttl,
            }
        )

    def access(self, d: object, c: object, session_id: object, now: int) -> str:
        return self._token("access", self.access_ttl_s, d, c, session_id, now)

    def refresh(self, d: str, c: str, session_id: str, now: int) -> str:
        return self._token("refresh", REFRESH_TTL, d, c, session_id, now)

    def decode(self, token: str) -> dict[str, Any] | None:
        """The claims as v5's ``SimpleTokenManager.decode_token`` reads them; None where it
        raises (bad signature, expired, not a JWT...).

        v5 calls ``jwt.decode`` with no audience, so PyJWT refuses every token that has
        an ``aud`` claim, its own genuine ones included: that bug is not modelled (see
        the README), so an ``aud`` of teddy-api is accepted here too. No issuer check,
        as in v5.
        """
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=["HS256"], options={"verify_aud": False}
            )
        except Exception:  # v5's generic except: any failure is "Token refresh failed"
            return None
        aud = claims.get("aud")
        if aud and aud != AUDIENCE and not (isinstance(aud, list) and AUDIENCE in aud):
            return None
        return claims


class RateLimiter:
    """Token bucket per normalised device ID (optional; off in v5)."""

    def __init__(self, per_second: float) -> None:
        self.rate = per_second
        self.capacity = max(1.0, per_second)
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: str) -> int | None:
        """None when allowed (and counted), else whole seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class _Replay(Exception):
    """Internal: the atomic wait found the first request's stored body."""

    def __init__(self, body: bytes) -> None:
        self.body = body


def _pairing_fields(d: str, c: str, made_up: bool) -> dict[str, Any]:
    """v5-head's additions to a 200: its child profile, a pairing code and payload."""
    if made_up:
        child: dict[str, Any] = {"id": c, "name": "Friend", "age": 7}
    else:
        child = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"teddy-child:{c}")), "age": 8}
        child["name"] = c
    child.update(language="en", voice_settings={}, safety_settings={}, parent_id=None)
    code = secrets.token_hex(16)
    payload = {
        "device_id": d,
        "child_id": c,
        "pairing_code": code,
        "status": "provisioned",
        "version": "1.0",
        "issued_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
    }
    return {
        "child_profile": child,
        "pairing_code": code,
        "provisioning_payload": base64.b64encode(json.dumps(payload).encode()).decode(),
    }


def request_origin(headers: Iterable[tuple[bytes, bytes]], scheme: str) -> tuple[str | None, str]:
    """(host, scheme) as v5-head's step 8 reads them from raw ASGI headers: the first
    ``X-Forwarded-Host``, else ``Host`` (None: neither); the first ``X-Forwarded-Proto``,
    else the URL's scheme. Empty values count as absent, as its ``or`` chain has it."""
    forwarded_host = host = forwarded_proto = b""
    for name, value in headers:
        if name == b"host":
            host = host or value
        elif name == b"x-forwarded-host":
            forwarded_host = forwarded_host or value
        elif name == b"x-forwarded-proto":
            forwarded_proto = forwarded_proto or value
    chosen = forwarded_host or host
    return (
        chosen.decode("latin-1") if chosen else None,
        forwarded_proto.decode("latin-1") if forwarded_proto else scheme or "http",
    )


class DeviceConfig:
    """Step 7's ``device_config`` as the build writes it (``harness.profiles.DeviceConfigStyle``).

    v5.0's URLs are fixed (``wss``/``https`` on its configured HOST), so they are built
    once; v5-head's come from each request's host and scheme. ``host`` is this server's
    HOST: its bind address (v5's config has no port in it), or v5-head's fallback.
    """

    def __init__(self, style: DeviceConfigStyle, host: str = DEFAULT_HOST) -> None:
        self.style = style
        self.host = host
        self._fixed = None if style.from_request else self._fields(host, "https")

    @property
    def from_request(self) -> bool:
        return self.style.from_request

    def _fields(self, host: str, scheme: str) -> dict[str, Any]:
        ws = "wss" if scheme == "https" else "ws"
        return {
            "websocket_url": f"{ws}://{host}{self.style.websocket_path}",
            "api_base_url": f"{scheme}://{host}/api/v1",
            "heartbeat_interval": 30,
            "reconnect_delay": 5,
            "max_message_size": 8192,
            "supported_audio_formats": list(self.style.audio_formats),
            "firmware_update_url": f"{scheme}://{host}/api/v1/esp32/firmware",
        }

    def body(self, session_id: str, origin: tuple[str | None, str] | None) -> dict[str, Any]:
        """The dict for one claim; ``origin`` is ``request_origin``'s (None: not known)."""
        fixed = self._fixed
        if fixed is None:
            host, scheme = origin or (None, "http")
            fixed = self._fields(host or self.host, scheme)
        return {"session_id": session_id, **fixed}


class ClaimService:
    """Runs claims against the configured stores as the configured build; one per server.

    The build's behaviour comes from ``config.profile`` (``harness.profiles``),
    the same object the oracle predicts from.
    """

    def __init__(
        self,
        config: ServerConfig,
        nonces: NonceStore,
        registry: Registry,
        metrics: ServerMetrics,
        host: str = DEFAULT_HOST,
    ) -> None:
        """``host``: the address it listens on, v5's HOST (URLs in ``device_config``)."""
        self.config = config
        self.profile = config.profile
        self.build = self.profile.build
        self.flags = config.flags
        self.nonces = nonces
        self.registry = registry
        self.metrics = metrics
        self.tokens = TokenIssuer(config.jwt_secret, config.access_ttl_s)
        self.device_config = DeviceConfig(self.build.device_config, host)
        # Does a claim need its request's host and scheme (v5-head's device_config)?
        self.wants_origin = self.device_config.from_request
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        self.mode = "normalized" if self.flags.normalize_ids_in_hmac else "legacy"
        self.ttl = config.nonce_ttl_s or self.profile.nonce_ttl_s
        # The v5 Redis client is made on the first claim whose PING succeeds, then kept:
        # before that an outage is "no client", after it every Redis error is a 503.
        self.redis_ready = False

    async def claim(
        self,
        raw: bytes,
        json_content: bool = True,
        origin: tuple[str | None, str] | None = None,
    ) -> Outcome:
        """One claim from its raw body; ``json_content`` is False for a non-JSON Content-Type;
        ``origin``: ``request_origin`` of its request, when ``wants_origin``."""
        start = time.perf_counter()
        out = await self._claim(raw, json_content, origin)
        self.metrics.observe_claim(out.status, time.perf_counter() - start)
        return out

    async def _claim(
        self, raw: bytes, json_content: bool, origin: tuple[str | None, str] | None
    ) -> Outcome:
        req, errors = validate_claim(raw, json_content)  # step 1
        if req is None:
            return Outcome(
                422,
                error_body(errors),
                "invalid_body",
                log={"invalid": [".".join(map(str, e["loc"])) for e in errors]},
                detail=errors,
            )
        d, c = req.device_id.strip().lower(), req.child_id.strip().lower()  # step 2
        log: dict[str, Any] = {
            "device": mask_id(d),
            "child": mask_id(c),
            "nonce": mask_secret(req.nonce),
            "hmac": mask_secret(req.hmac_hex),
        }
        if req.firmware_version is not None:
            log["firmware_version"] = req.firmware_version
        if self.limiter is not None:
            wait = self.limiter.retry_after(d)
            if wait is not None:
                self.metrics.rate_limited.inc()
                return _error(
                    429,
                    "Too many claims for this device",
                    "rate_limited",
                    log,
                    {"Retry-After": str(wait)},
                )
        raw_hmac = req.hmac_hex  # the keys and the stored value use it as sent
        if self.flags.enable_idempotency:
            nonce_key = f"nonce:{d}:{c}:{req.nonce}"
            idem_key = f"claim:{d}:{c}:{req.nonce}:{raw_hmac}"
        else:
            nonce_key, idem_key = f"device_nonce:{d}:{c}:{req.nonce}", ""
        lock_key: str | None = None
        protected = True
        try:
            try:  # step 3
                if not self.redis_ready:
                    await self.nonces.ping()
                    self.redis_ready = True
                early, lock_key = await self._replay_check(nonce_key, idem_key, raw_hmac)
            except _Replay as hit:
                return self._cached(hit.body, log)
            except StoreUnavailable as exc:
                degraded = self._on_store_failure(exc, log)
                if degraded is not None:
                    return degraded
                protected = False
            else:
                if early is not None:
                    early.log.update(log)
                    return early
            out = await self._issue(req, d, c, log, origin)  # steps 4-7
            if out.status == 200 and self.flags.enable_idempotency and protected:
                # step 8: a store error is logged and ignored
                try:
                    await self.nonces.set(idem_key, out.body, self.ttl)
                except StoreUnavailable as exc:
                    log["store_error"] = exc.reason
            return out
        finally:
            if lock_key is not None:
                with contextlib.suppress(StoreUnavailable):  # else the lock's TTL frees it
                    await self.nonces.delete(lock_key)

    async def _replay_check(
        self, nonce_key: str, idem_key: str, raw_hmac: str
    ) -> tuple[Outcome | None, str | None]:
        """Step 3. Returns an early answer (409) or None to carry on, plus a held lock key."""
        if not self.flags.enable_idempotency:
            if not await self.nonces.set_nx(nonce_key, b"used", self.ttl):
                return self._conflict(), None
            return None, None
        cached = await self.nonces.get(idem_key)
        if cached is not None:
            raise _Replay(cached)
        existing = await self.nonces.set_nx_get(nonce_key, raw_hmac.encode(), self.ttl)
        if existing is not None and existing.decode(errors="replace") != raw_hmac:
            return self._conflict(), None
        if not self.build.atomic_idempotency:
            return None, None  # v5: the same HMAC carries on, even while the first is in flight
        return None, await self._lead_or_wait(idem_key)

    async def _lead_or_wait(self, idem_key: str) -> str:
        """Atomic build: one request per (d, c, nonce, hmac) runs; the others replay its body."""
        lock_key = "lock:" + idem_key
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            if await self.nonces.set_nx(lock_key, b"1", LOCK_TTL_S):
                cached = await self.nonces.get(idem_key)
                if cached is not None:  # the leader finished between our two calls
                    await self.nonces.delete(lock_key)
                    raise _Replay(cached)
                return lock_key
            cached = await self.nonces.get(idem_key)
            if cached is not None:
                raise _Replay(cached)
            if time.monotonic() > deadline:
                raise StoreUnavailable("idempotency lock", "identical claim still in flight")
            await asyncio.sleep(LOCK_POLL_S)

    def _cached(self, body: bytes, log: dict[str, Any]) -> Outcome:
        self.metrics.replay_cached.inc()
        return Outcome(200, body, "replay_cached", {"X-Idempotent-Request": "true"}, log)

    def _conflict(self) -> Outcome:
        self.metrics.replay_conflict.inc()
        return _error(409, NONCE_USED[self.flags.enable_idempotency], "replay_conflict")

    def _on_store_failure(self, exc: StoreUnavailable, log: dict[str, Any]) -> Outcome | None:
        """CONTRACT.md section 3: None to carry on unprotected, else a 503.

        Only with no client yet (Redis down since start) and idempotency on does
        DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE carry on; an outage under a made
        client is a 503 whatever the flags. FAIL_OPEN_ON_REDIS_ERROR is read nowhere.
        """
        log["store_error"] = exc.reason
        carry_on = (
            not self.redis_ready
            and self.flags.enable_idempotency
            and self.flags.disable_idempotency_on_redis_failure
        )
        action = "carry_on" if carry_on else "fail_closed"
        self.metrics.store_unavailable.labels(exc.store, action).inc()
        if carry_on:
            log["replay_protection"] = False
            return None
        if not self.redis_ready:
            text = "Nonce verification service unavailable"
        elif self.flags.enable_idempotency:
            text = "Verification service error"
        else:
            text = "Nonce verification error"
        return _error(503, text, "store_unavailable", log)

    async def _issue(
        self,
        req: ClaimFields,
        d: str,
        c: str,
        log: dict[str, Any],
        origin: tuple[str | None, str] | None,
    ) -> Outcome:
        """Steps 4-7 and the 200 body."""
        profile = self.profile
        device = await self._device(d, log)  # step 4
        if isinstance(device, Outcome):
            return device
        if device is None:
            return _error(404, "Device not registered or not found", "device_not_found", log)
        if not device.is_active:
            return _error(403, "Device is disabled or suspended", "device_disabled", log)
        key = profile.secret_for(device.oob_secret)
        if not _verify(req.device_id, req.child_id, req.nonce, key, req.hmac_hex, self.mode):
            return _error(401, "Invalid device authentication signature", "bad_hmac", log)  # step 5
        try:
            child = await self.registry.child_is_active(c)  # step 6
        except StoreUnavailable as exc:
            log["store_error"] = exc.reason
            if self.build.db_error_is_missing:
                child = None  # v5.0 swallows it: "not found"
            else:
                return _error(500, "Child profile retrieval error", "registry_error", log)
        made_up = False
        if not child:
            if profile.child_fallback:  # v5-head: its lookup skips inactive children too
                made_up = True
            else:
                return _error(404, "Child profile not found or inactive", "child_not_found", log)
        now = int(time.time())
        session_id = str(uuid.uuid4())
        body: dict[str, Any] = {
            "access_token": self.tokens.access(d, c, session_id, now),
            "refresh_token": self.tokens.refresh(d, c, session_id, now),
            "token_type": "Bearer",
            "expires_in": self.tokens.access_ttl_s,
            "device_session_id": session_id,
            "child_profile": {"child_id": c},
            "device_config": self.device_config.body(session_id, origin),
        }
        if self.build.pairing_fields:
            body.update(_pairing_fields(d, c, made_up))
        if made_up:
            log["child_profile"] = "made_up"
        self.metrics.success.inc()
        return Outcome(200, json_body(body), "issued", log=log)

    async def _device(self, d: str, log: dict[str, Any]) -> DeviceRecord | Outcome | None:
        """Step 4: the device, None (404), or an early answer (the v5-head insert's 500)."""
        profile = self.profile
        try:
            device = await self.registry.get_device(d)
        except StoreUnavailable as exc:
            log["store_error"] = exc.reason
            if not self.build.db_error_is_missing:
                return _error(500, CLAIM_ERROR, "registry_error", log)
            device = None  # v5.0 swallows it: the device is "missing"
        if device is not None and self.build.lookup_active_only and not device.is_active:
            device = None  # v5-head looks up active devices only
        if device is not None:
            return device
        if not profile.auto_registers(d):
            return None
        secret = profile.registered_secret(d)
        try:
            inserted = await self.registry.register_device(d, secret)
        except StoreUnavailable as exc:
            log["store_error"] = exc.reason
            if not self.build.db_error_is_missing:
                return _error(500, CLAIM_ERROR, "registry_error", log)
            return DeviceRecord(d, secret, True)  # v5.0 logs it, goes on with its record
        if inserted:
            self.metrics.auto_register.inc()
            log["auto_registered"] = True
        elif self.build.insert_conflict_500:
            return _error(500, CLAIM_ERROR, "register_conflict", log)  # v5-head: create raises
        # v5.0 (ON CONFLICT DO NOTHING) goes on with the record it built, not a re-read
        return DeviceRecord(d, secret, True)

    def refresh(self, raw: bytes, json_content: bool = True) -> Outcome:
        """``POST /api/v1/pair/token/refresh`` as v5's ``refresh_device_token``: a new access
        token for the refresh token's own IDs and session; every refusal is a 401."""
        token, errors = validate_refresh(raw, json_content)
        if token is None or errors:
            return Outcome(422, error_body(errors), "invalid_body", detail=errors)
        claims = self.tokens.decode(token)
        if claims is None:
            return _error(401, REFRESH_FAILED, "refresh_failed")
        if self.build.refresh_refuses_aud and "aud" in claims:  # PyJWT's InvalidAudienceError
            return _error(401, REFRESH_FAILED, "refresh_audience")
        if claims.get("type") != TOKEN_TYPES["refresh"]:
            return _error(401, REFRESH_BAD_TYPE, "bad_refresh_type")
        d, c, session_id = claims.get("device_id"), claims.get("child_id"), claims.get("session_id")
        if not (d and c and session_id):
            return _error(401, REFRESH_BAD_CLAIMS, "bad_refresh_claims")
        # v5 logs device_id[:8] and session_id[:8] before it answers: a value that cannot
        # be sliced (a number, an object) raises there, and its except makes it this 401.
        if not isinstance(d, str | list) or not isinstance(session_id, str | list):
            return _error(401, REFRESH_FAILED, "refresh_failed")
        body = {  # RefreshResponse
            "access_token": self.tokens.access(d, c, session_id, int(time.time())),
            "token_type": "Bearer",
            "expires_in": self.tokens.access_ttl_s,
        }
        return Outcome(
            200,
            json_body(body),
            "refreshed",
            log={"device": mask_id(str(d)), "child": mask_id(str(c))},
            router_correlation_id=False,
        )
