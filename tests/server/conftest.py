"""Session-wide real Redis and PostgreSQL for the server tests, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import PostgresServer, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A shared redis-server; tests that stop it use their own ``RedisServer`` instead."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def claim_database(postgres_server: PostgresServer) -> str:
    """A database with the claim schema applied through the real migration path."""
    import asyncio

    from harness.server.stores.registry import migrate_url

    url = postgres_server.create_database("claims")
    asyncio.run(migrate_url(url))
    return url
