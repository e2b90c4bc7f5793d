"""ServerConfig: everything one reference-server instance is, as one picklable value.

Picklable because ``EmbeddedServer(mode="process")`` hands it to a child process.
The JWT secret defaults to a fresh random value per config so the embedded
harness can verify token signatures with ``config.jwt_secret``.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from harness.errors import HarnessInputError
from harness.flags import Flags
from harness.profiles import DEFAULT_BUILD, REDIS_STATES, ServerProfile, make_profile
from harness.protocol import parse_oob_hex
from harness.protocol.tokens import ACCESS_TTL, check_access_ttl
from harness.server.seed import Seed

REDIS_OUTAGES = tuple(s for s in REDIS_STATES if s != "up")


def parse_auto_register_secret(value: str | None) -> bytes | None:
    """``v5`` (default: derive from the lower-case ID) or ``static:<64 hex>`` (one v5 build)."""
    if value is None or value.strip().lower() in ("", "v5", "v5-derived"):
        return None
    scheme, sep, rest = value.partition(":")
    if scheme.strip().lower() != "static" or not sep:
        raise HarnessInputError("--auto-register-secret", "must be v5 or static:<64 hex>")
    return parse_oob_hex(rest, "--auto-register-secret")


def normalize_database_url(url: str) -> str:
    """Accept SQLAlchemy spellings (``postgresql+asyncpg://``) as the checklist writes them."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise HarnessInputError("--database-url", "must look like postgresql://user@host:port/db")
    base = scheme.split("+", 1)[0].lower()
    if base not in ("postgresql", "postgres"):
        raise HarnessInputError("--database-url", f"unsupported scheme {scheme!r}")
    return f"postgresql://{rest}"


def _new_secret() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One reference server: its profile (build, flags, environment...), stores, provisioning.

    ``profile_name`` is the build (``v5.0``, ``v5-head``, ``atomic``);
    ``atomic_idempotency=True`` on v5.0 is the ``atomic`` build. ``redis_outage``
    declares the in-memory nonce store down since start or down after the first
    claim, so the Redis-failure rows are reproducible without killing a Redis.
    """

    flags: Flags = field(default_factory=Flags)
    seed: Seed = field(default_factory=Seed)
    redis_url: str | None = None
    database_url: str | None = None
    jwt_secret: str = field(default_factory=_new_secret)
    # Make idempotency check-and-store atomic (fixes the v5 race); off = v5 behaviour.
    atomic_idempotency: bool = False
    # None: auto-registered devices get derive_oob_v5(lower-case d); else this static secret.
    auto_register_secret: bytes | None = None
    # Claims per second per device ID; None = no limit (v5 default).
    rate_limit: float | None = None
    # Request log: a file path, "-" for stderr, None for no request log.
    log_file: str | None = None
    # Create the PostgreSQL schema at start-up if it is missing.
    migrate: bool = False
    profile_name: str = DEFAULT_BUILD
    environment: str = "production"
    # Without the deployed app's middleware: correlation IDs on 200s only, {"detail"} bodies.
    bare_router: bool = False
    redis_outage: str | None = None
    # None: the build's TTLs (CONTRACT.md); tests may shorten them.
    nonce_ttl_s: int | None = None
    # Access tokens' exp - iat and the 200s' expires_in (v5: one hour); soaks of MQTT
    # sessions shorten it so that tokens expire and are refreshed within the run.
    access_ttl_s: int = ACCESS_TTL

    def __post_init__(self) -> None:
        if self.redis_outage is not None and self.redis_outage not in REDIS_OUTAGES:
            raise HarnessInputError(
                "--redis-state",
                f"must be one of {', '.join(REDIS_OUTAGES)}, got {self.redis_outage!r}",
            )
        if self.database_url is not None:
            object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if self.rate_limit is not None and not 0 < self.rate_limit < math.inf:  # nan too
            raise HarnessInputError("--rate-limit", "must be a positive number of claims/s")
        if not self.jwt_secret:
            raise HarnessInputError("--jwt-secret", "must not be empty")
        check_access_ttl(self.access_ttl_s)

        if self.redis_outage is not None and self.redis_url is not None:
            raise HarnessInputError("--redis-state", "is for the in-memory store; stop the Redis")
        self.profile  # noqa: B018 - validates the profile options now, one line each

    @classmethod
    def running(cls, profile: ServerProfile, seed: Seed, **options: object) -> ServerConfig:
        """A server that runs ``profile`` (a declared Redis outage on its memory store)."""
        return cls(
            flags=profile.flags,
            seed=seed,
            profile_name=profile.name,
            environment=profile.environment,
            bare_router=profile.bare_router,
            redis_outage=None if profile.redis == "up" else profile.redis,
            auto_register_secret=profile.auto_register_secret,
            **options,  # type: ignore[arg-type]
        )

    @property
    def profile(self) -> ServerProfile:
        """The server profile this config runs (the oracle is told the same one)."""
        return make_profile(
            self.profile_name,
            self.flags,
            environment=self.environment,
            redis=self.redis_outage or "up",
            bare_router=self.bare_router,
            auto_register_secret=self.auto_register_secret,
            atomic_idempotency=self.atomic_idempotency,
        )

    def describe_stores(self) -> str:
        nonce = "redis" if self.redis_url else "memory"
        registry = "postgresql" if self.database_url else "memory"
        return f"nonce store {nonce}, registry {registry}"

    def profile_notes(self) -> list[str]:
        """Non-default server-profile options, for the start-up line."""
        profile = self.profile
        notes = [f"profile {profile.name}", f"ENVIRONMENT={profile.environment}"]
        if self.bare_router:
            notes.append("bare router")
        if self.redis_outage is not None:
            notes.append(f"declared Redis outage: {self.redis_outage}")
        if self.auto_register_secret is not None:
            notes.append("static auto-register secret")
        if self.rate_limit is not None:
            notes.append(f"rate limit {self.rate_limit:g}/s per device")
        if self.access_ttl_s != ACCESS_TTL:
            notes.append(f"access tokens live {self.access_ttl_s} s")
        return notes
