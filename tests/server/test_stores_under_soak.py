"""Soaks against the reference server on its real stores: Redis nonces, PostgreSQL registry.

The oracle must not care which store the server uses, and when Redis is down it
must know from the flags whether the server fails closed (503) or carries on
without replay protection.
"""

from __future__ import annotations

import asyncio

import pytest

from harness.flags import Flags
from harness.fleet import load_fleet
from harness.run import SoakOptions, SoakOutcome, run_soak
from harness.server.config import ServerConfig
from harness.server.embedded import EmbeddedServer
from tests.support import ROOT
from tests.support.services import PostgresServer, RedisServer

FLEET = load_fleet(ROOT / "fleets" / "soak.toml").scaled(300)


@pytest.fixture(scope="module")
def database(postgres_server: PostgresServer) -> str:
    """A database of its own on the session's PostgreSQL (tests/server/conftest.py)."""
    return postgres_server.create_database("fleet")


def _soak(config: ServerConfig, **options: object) -> SoakOutcome:
    async def main() -> SoakOutcome:
        async with EmbeddedServer(config) as server:
            opts = SoakOptions(
                target=server.url,
                fleet=FLEET,
                claims=300,
                flags=config.flags,
                atomic_idempotency=config.atomic_idempotency,
                jwt_secret=server.jwt_secret,
                keepalive=True,
                **options,  # type: ignore[arg-type]
            )
            return await run_soak(opts)

    return asyncio.run(main())


def _failed(outcome: SoakOutcome) -> set[str]:
    return {n for n, t in outcome.results.checks.items() if not t.passed}


@pytest.mark.parametrize("idempotency", [False, True], ids=["idem-off", "idem-on"])
def test_redis_and_postgresql_stores(
    redis_server: RedisServer, database: str, idempotency: bool
) -> None:
    flags = Flags(enable_idempotency=idempotency, enable_auto_register=True)
    config = ServerConfig(
        flags=flags,
        seed=FLEET.to_seed(),
        redis_url=redis_server.url,
        database_url=database,
        migrate=True,
        atomic_idempotency=True,
    )
    outcome = _soak(config)
    assert outcome.results.sent == 300
    assert _failed(outcome) == set(), outcome.results.to_dict()["checks"]
    assert outcome.results.by_status["200"] > 0


@pytest.mark.parametrize(
    ("flags", "fails_closed"),
    [
        (Flags(enable_idempotency=True, disable_idempotency_on_redis_failure=False), True),
        (Flags(enable_idempotency=True, disable_idempotency_on_redis_failure=True), False),
        (Flags(enable_idempotency=False, fail_open_on_redis_error=False), True),
        (Flags(enable_idempotency=False, fail_open_on_redis_error=True), True),  # read nowhere
    ],
    ids=lambda v: v.key() if isinstance(v, Flags) else str(v),
)
def test_redis_down_follows_the_flags(flags: Flags, fails_closed: bool) -> None:
    with RedisServer() as own:
        config = ServerConfig(flags=flags, seed=FLEET.to_seed(), redis_url=own.url)

        async def main() -> tuple[SoakOutcome, SoakOutcome]:
            async with EmbeddedServer(config) as server:
                own.stop()  # Redis goes away under a running server
                opts = SoakOptions(
                    target=server.url,
                    fleet=FLEET,
                    claims=200,
                    flags=flags,
                    jwt_secret=server.jwt_secret,
                    keepalive=True,
                    redis="down-since-start",  # no claim made the server's client yet
                    timeout=5.0,
                    firmware_time_scale=0.0,  # a 503's retries at once: rows, not waits
                )
                declared = await run_soak(opts)
                opts.redis = "up"  # the same outage, not declared
                return declared, await run_soak(opts)

        outcome, undeclared = asyncio.run(main())
    statuses = outcome.results.by_status
    assert _failed(outcome) == set(), outcome.results.to_dict()["checks"]
    if fails_closed:  # (the spaces cohort's bodies are refused before Redis is asked)
        assert set(statuses) == {"503", "422"}
    else:  # no replay protection: retries get fresh answers, never 409
        assert "503" not in statuses and "409" not in statuses and statuses["200"] > 0
    # Declared wrongly (store assumed healthy), the same outage is a violation.
    assert _failed(undeclared)


def test_redis_down_later_is_503_whatever_the_flags() -> None:
    flags = Flags(enable_idempotency=True, disable_idempotency_on_redis_failure=True)
    with RedisServer() as own:
        config = ServerConfig(flags=flags, seed=FLEET.to_seed(), redis_url=own.url)

        async def main() -> SoakOutcome:
            async with EmbeddedServer(config) as server:
                opts = SoakOptions(
                    target=server.url,
                    fleet=FLEET,
                    claims=20,
                    flags=flags,
                    keepalive=True,
                    jwt_secret=server.jwt_secret,
                    timeout=5.0,
                    firmware_time_scale=0.0,  # a 503's retries at once: rows, not waits
                )
                await run_soak(opts)  # the first claims make the client
                own.stop()
                opts.claims, opts.redis = 100, "down-later"
                return await run_soak(opts)

        outcome = asyncio.run(main())
    assert set(outcome.results.by_status) == {"503", "422"}
    assert _failed(outcome) == set(), outcome.results.to_dict()["checks"]
