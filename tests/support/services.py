"""Real Redis and PostgreSQL servers for tests (``harness.services``), skipping locally and
failing in CI when the binary is missing, so nothing real is silently left out."""

from __future__ import annotations

from harness import services
from tests.support import require_binary


class RedisServer(services.RedisServer):
    def __init__(self, port: int | None = None) -> None:
        require_binary("redis-server", "redis-server")
        super().__init__(port)


class PostgresServer(services.PostgresServer):
    def __init__(self, port: int | None = None) -> None:
        for name, package in (("initdb", "postgresql"), ("pg_ctl", "postgresql"),
                              ("psql", "postgresql-client")):  # fmt: skip
            require_binary(name, package)
        super().__init__(port)
