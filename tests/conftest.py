"""Top-level pytest configuration: real back-ends more than one area needs.

A Pushgateway per test; Redis and PostgreSQL once per session (tests that stop
Redis start their own ``RedisServer``).

Area-specific fixtures live in each sub-folder's conftest."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server.stores.registry import migrate_url
from tests.support import free_port, require_binary
from tests.support.services import PostgresServer, RedisServer


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real ``prometheus-pushgateway`` on a free port (memory only); yields its base URL."""
    binary = require_binary("prometheus-pushgateway", "prometheus-pushgateway")
    port = free_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"pushgateway did not start: {(tmp_path / 'pushgateway.log').read_text()}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
    url = postgres_server.create_database("claims")
    asyncio.run(migrate_url(url))
    return url
