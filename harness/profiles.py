"""Server profiles: the real v5 builds as named, complete behaviours (CONTRACT.md 2, 3, 5, 6).

A verdict is only as good as what the harness believes the server is. A
``ServerBuild`` is one build of the teddy claim server, every behaviour that
differs between builds as data; a ``ServerProfile`` is that build as deployed:
its flags, its ``ENVIRONMENT``, whether the deployed app's middleware wraps the
router, and the state of its Redis. One definition with three users: the
reference server runs it, the oracle predicts it, the probe names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.protocol import AUTO_REGISTER_PREFIXES, derive_oob_v5

RedisState = Literal["up", "down-since-start", "down-later"]
REDIS_STATES: tuple[RedisState, ...] = ("up", "down-since-start", "down-later")
# The one secret v5-head checks every device against: the v5 derivation of the ID the
# live firmware path falls back to for MAC CC:DB:A7:95:BA:A4 (CONTRACT.md sections 1, 5).
HEAD_STATIC_ID = "Teddy-ESP32-A795BAA4"
HEAD_STATIC_SECRET = bytes.fromhex(derive_oob_v5(HEAD_STATIC_ID))


@dataclass(frozen=True, slots=True)
class DeviceConfigStyle:
    """What differs between builds in the 200's ``device_config`` (contract step 7).

    ``from_request``: URLs from the request's (forwarded) host and scheme, ``ws`` unless
    it was https; else ``wss``/``https`` on the configured ``HOST`` (its bind address).
    """

    websocket_path: str
    audio_formats: tuple[str, ...]
    from_request: bool = False


# claim_api.py "Step 7: Device configuration" (1b33a66) and "Step 8" (7b2d2f3).
V5_0_DEVICE_CONFIG = DeviceConfigStyle("/ws/esp32/chat", ("opus", "mp3"))
V5_HEAD_DEVICE_CONFIG = DeviceConfigStyle("/ws/esp32/connect", ("pcm_s16le", "mp3"), True)


@dataclass(frozen=True, slots=True)
class ServerBuild:
    """One build of the claim server: what it does, as data."""

    name: str
    commit: str
    summary: str
    # Steps 3 and 8 atomic: identical claims in flight get one token (the race fixed).
    atomic_idempotency: bool = False
    # None: each device's own secret; else every device is checked against this one.
    static_secret: bytes | None = None
    # Unknown prefixed devices are created whatever ENABLE_AUTO_REGISTER says.
    auto_register_always: bool = False
    # The lookup filters is_active: a disabled device is "missing" (404, 500 if prefixed).
    lookup_active_only: bool = False
    # A losing insert of a concurrent first claim raises: 500.
    insert_conflict_500: bool = False
    # Outside ENVIRONMENT=production an unknown child gets a made-up profile and a 200.
    child_fallback: bool = False
    # The 200 body adds pairing_code and provisioning_payload.
    pairing_fields: bool = False
    # A PostgreSQL error in the device lookup: swallowed as "missing" (v5.0) or a 500.
    db_error_is_missing: bool = True
    device_config: DeviceConfigStyle = V5_0_DEVICE_CONFIG
    # The refresh endpoint decodes with jwt.decode(token, key, algorithms) and no
    # audience: PyJWT 2 then raises InvalidAudienceError for any token carrying ``aud``,
    # which every v5 token does, so every genuine refresh is 401 "Token refresh failed".
    refresh_refuses_aud: bool = True
    nonce_ttl_off_s: int = 900  # device_nonce:{d}:{c}:{nonce}, idempotency off
    nonce_ttl_on_s: int = 300  # nonce:{d}:{c}:{nonce} and claim:...:{hmac}, idempotency on


V5_0 = ServerBuild(
    "v5.0",
    "1b33a66",
    "per-device secrets, auto-register by flag, disabled devices 403",
)
V5_HEAD = ServerBuild(
    "v5-head",
    "7b2d2f3",
    "one static secret, auto-register whatever the flag, disabled devices missing",
    static_secret=HEAD_STATIC_SECRET,
    auto_register_always=True,
    lookup_active_only=True,
    insert_conflict_500=True,
    child_fallback=True,
    pairing_fields=True,
    db_error_is_missing=False,
    device_config=V5_HEAD_DEVICE_CONFIG,
    nonce_ttl_off_s=300,
)
ATOMIC = ServerBuild(
    "atomic",
    "-",
    "v5.0 with the fixes proposed here: check-and-store atomic (the v5 race), refresh "
    "decoding with its audience",
    atomic_idempotency=True,
    refresh_refuses_aud=False,
)
BUILDS: dict[str, ServerBuild] = {b.name: b for b in (V5_0, V5_HEAD, ATOMIC)}
DEFAULT_BUILD = V5_0.name


def build_named(name: str, where: str = "--profile") -> ServerBuild:
    """A build by name; anything else is one line naming the known ones."""
    build = BUILDS.get(str(name).strip().lower())
    if build is None:
        raise HarnessInputError(where, f"unknown profile {name!r} (known: {', '.join(BUILDS)})")
    return build


def parse_environment(value: str, where: str = "--environment") -> str:
    """``ENVIRONMENT`` as the server reads it; only its production-or-not matters."""
    text = str(value).strip()
    if not text or any(ch.isspace() for ch in text):
        raise HarnessInputError(where, f"{value!r} is not an environment name (e.g. production)")
    return text


def parse_redis_state(value: str, where: str = "--redis-state") -> RedisState:
    text = str(value).strip().lower()
    for state in REDIS_STATES:
        if text == state:
            return state
    raise HarnessInputError(where, f"{value!r} is not one of {', '.join(REDIS_STATES)}")


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """A build as deployed: flags, environment, middleware, Redis state, build options.

    ``auto_register_secret``: the v5.0 variant that gave every auto-registered
    device one static secret (None: the v5 derivation of the lower-case ID).
    ``bare_router``: the router without the deployed app's middleware (correlation
    IDs on 200s only, FastAPI's ``{"detail": ...}`` error bodies).
    """

    flags: Flags = field(default_factory=Flags)
    build: ServerBuild = V5_0
    environment: str = "production"
    auto_register_secret: bytes | None = None
    redis: RedisState = "up"
    bare_router: bool = False

    @property
    def name(self) -> str:
        return self.build.name

    @property
    def atomic_idempotency(self) -> bool:
        return self.build.atomic_idempotency

    def declaration(self) -> dict[str, Any]:
        """What declares this profile (``DECLARATION_KEYS``; ``declared_profile`` reads it
        back): the fields a run's options carry, besides the flags."""
        return {
            "profile": self.name,
            "environment": self.environment,
            "redis": self.redis,
            "bare_router": self.bare_router,
            "auto_register_secret": self.auto_register_secret,
            "atomic_idempotency": self.atomic_idempotency,
        }

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def child_fallback(self) -> bool:
        return self.build.child_fallback and not self.production

    def auto_registers(self, d: str) -> bool:
        """Would an unknown device with normalised ID ``d`` be created?"""
        if not d.startswith(AUTO_REGISTER_PREFIXES):
            return False
        return self.build.auto_register_always or self.flags.enable_auto_register

    def secret_for(self, stored: bytes) -> bytes:
        """The key the HMAC is checked with, given the device's stored secret."""
        return self.build.static_secret or stored

    def registered_secret(self, d: str) -> bytes:
        """The secret an auto-registered device is stored with."""
        return self.auto_register_secret or bytes.fromhex(derive_oob_v5(d))

    def correlation_on(self, status: int) -> bool:
        """Does an answer with this status carry ``X-Correlation-Id``?"""
        return status == 200 or not self.bare_router

    @property
    def nonce_ttl_s(self) -> int:
        if self.flags.enable_idempotency:
            return self.build.nonce_ttl_on_s
        return self.build.nonce_ttl_off_s

    def redis_answer(self) -> Literal["protected", "unprotected", "503"]:
        """What a claim meets at step 3 in this Redis state (CONTRACT.md section 3)."""
        if self.redis == "up":
            return "protected"
        if self.redis == "down-later":
            return "503"
        if self.flags.enable_idempotency and self.flags.disable_idempotency_on_redis_failure:
            return "unprotected"
        return "503"

    def to_dict(self) -> dict[str, object]:
        """The report's ``profile`` block (no secrets: the static one is public anyway)."""
        return {
            "name": self.name,
            "commit": self.build.commit,
            "environment": self.environment,
            "bare_router": self.bare_router,
            "redis": self.redis,
            "static_auto_register_secret": self.auto_register_secret is not None,
        }


def make_profile(
    name: str = DEFAULT_BUILD,
    flags: Flags | None = None,
    *,
    environment: str = "production",
    redis: str = "up",
    bare_router: bool = False,
    auto_register_secret: bytes | None = None,
    atomic_idempotency: bool = False,
    where: str = "--profile",
) -> ServerProfile:
    """A profile from CLI-shaped values; every bad value is one line naming its option."""
    build = build_named(name, where)
    if atomic_idempotency and not build.atomic_idempotency:
        if build is not V5_0:
            raise HarnessInputError(
                "--atomic-idempotency",
                f"only v5.0 has an atomic variant (--profile atomic), not {build.name}",
            )
        build = ATOMIC
    where_env = "environment" if where == "profile" else "--environment"
    if auto_register_secret is not None and build.static_secret is not None:
        raise HarnessInputError(
            "--auto-register-secret",
            f"{build.name} checks every device against its own static "
            "secret; the option is for v5.0 builds",
        )
    return ServerProfile(
        flags or Flags(),
        build,
        parse_environment(environment, where_env),
        auto_register_secret,
        parse_redis_state(redis),
        bare_router,
    )


# What a command or options object declares about the server (``SoakOptions``,
# ``CompatOptions``, the CLI's ``server_profile`` values): None profile and environment
# leave them to the fleet or bench file.
DECLARATION_KEYS = (
    "profile",
    "environment",
    "redis",
    "bare_router",
    "auto_register_secret",
    "atomic_idempotency",
)


def declared_profile(
    flags: Flags,
    declaration: Mapping[str, Any] | object,
    *,
    default_name: str | None = None,
    default_environment: str | None = None,
) -> ServerProfile:
    """The profile a declaration means, the file's name and environment filling in what it
    leaves open (else v5.0 in production)."""
    if isinstance(declaration, Mapping):
        given = {key: declaration.get(key) for key in DECLARATION_KEYS}
    else:
        given = {key: getattr(declaration, key, None) for key in DECLARATION_KEYS}
    return make_profile(
        given["profile"] or default_name or DEFAULT_BUILD,
        flags,
        environment=given["environment"] or default_environment or "production",
        redis=given["redis"] or "up",
        bare_router=bool(given["bare_router"]),
        auto_register_secret=given["auto_register_secret"],
        atomic_idempotency=bool(given["atomic_idempotency"]),
    )
