"""Nonce/idempotency store: ``SET NX EX`` semantics over memory (embedded) or Redis.

Both backends offer the same four primitives, so the claim logic (including the
atomic switch) is written once. The memory store yields to the event loop on
a lookup, as a network round trip would: without that, requests could never
interleave and the v5 race the contract describes would be impossible to show.
(Only on ``get``: each yield costs a trip through the whole ASGI stack.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from harness.server.stores import StoreUnavailable


class NonceStore(Protocol):
    """Key/value store with per-key TTL and atomic set-if-absent."""

    backend: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the store cannot be used."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set_nx_get(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        """Set ``key`` if absent; return the value already there, or None when this call set it."""
        ...

    async def set_nx(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Set ``key`` if absent; True when this call set it."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """``SET key value EX ttl``: the last writer wins."""
        ...

    async def delete(self, key: str) -> None: ...


class MemoryNonceStore:
    """In-process store with TTLs; the embedded default."""

    backend = "memory"
    _SWEEP_EVERY = 4096

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._writes = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def ping(self) -> None:
        return None

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def _sweep(self, now: float) -> None:
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            dead = [k for k, (_, exp) in self._data.items() if exp <= now]
            for k in dead:
                del self._data[k]

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(0)
        return self._live(key, time.monotonic())

    async def set_nx_get(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        now = time.monotonic()
        existing = self._live(key, now)
        if existing is None:
            self._data[key] = (value, now + ttl_s)
            self._sweep(now)
        return existing

    async def set_nx(self, key: str, value: bytes, ttl_s: float) -> bool:
        return await self.set_nx_get(key, value, ttl_s) is None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        now = time.monotonic()
        self._data[key] = (value, now + ttl_s)
        self._sweep(now)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


class RedisNonceStore:
    """Redis, as the v5 server uses it: ``SET key value NX EX ttl`` (with ``GET``, Redis >= 7).

    Timeouts are short and there is no back-off: when Redis is down the contract's
    failure rows must apply at once. One immediate retry on a fresh connection is
    kept (redis-py's own default retries more): a pooled connection Redis (or a
    proxy) dropped while it sat idle fails its next command even after Redis is
    back, and without the retry that one command is a 503, or a claim answered but
    never cached, long after the outage (measured behind the fault proxy).
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        timeout_s: float = 1.0,
        max_connections: int = 256,
        pool_wait_s: float = 10.0,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        # Waiting for a free pooled connection is load, not an outage: a long
        # wait here keeps a busy server from taking the Redis-failure rows.
        self.pool_wait_s = pool_wait_s
        self._client: object | None = None

    async def open(self) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # Under uvloop a dead idle connection fails with a RuntimeError ("unable to
        # perform operation on <TCPTransport closed=True>"): retried like a lost one.
        lost = [RedisConnectionError, RedisTimeoutError, RuntimeError, OSError]
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.pool_wait_s,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=lost,
        )
        self._client = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1), retry_on_error=lost)

    @property
    def client(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            raise StoreUnavailable("redis", "store not opened")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()  # type: ignore[attr-defined]

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        # Any failure, not only redis-py's own errors: the v5 router catches ``Exception``
        # around every Redis call (503), so a 500 here would be a false finding.
        from redis.exceptions import RedisError

        try:
            return await coro
        except Exception as exc:
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                # A pooled connection its peer reset while idle fails under uvloop with a
                # RuntimeError that redis-py does not treat as a lost connection, and stays
                # in the pool: 503s long after Redis is back (measured, behind the fault
                # proxy). Dropping the idle connections lets the client reconnect, as the
                # contract's "Redis back: recovers by itself" row says.
                with contextlib.suppress(Exception):
                    await self.client.connection_pool.disconnect(inuse_connections=False)
            raise StoreUnavailable("redis", type(exc).__name__) from exc

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self.client.get(key))
        return None if value is None else bytes(value)

    async def set_nx_get(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        old = await self._call(self.client.set(key, value, nx=True, ex=int(ttl_s), get=True))
        return None if old is None else bytes(old)

    async def set_nx(self, key: str, value: bytes, ttl_s: float) -> bool:
        done = await self._call(self.client.set(key, value, nx=True, ex=int(ttl_s)))
        return bool(done)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call(self.client.set(key, value, ex=int(ttl_s)))

    async def delete(self, key: str) -> None:
        await self._call(self.client.delete(key))


class OutageNonceStore(MemoryNonceStore):
    """The memory store with a declared Redis outage (``ServerConfig.redis_outage``).

    ``down-since-start``: every call fails, so the server never gets a client.
    ``down-later``: the first ``ping`` (the server making its client on the
    first claim) succeeds and every call after it fails: Redis went away under
    a server that already had its client. The claim service then takes the
    contract's rows exactly as with a real Redis stopped at those moments.
    """

    backend = "memory"

    def __init__(self, outage: str) -> None:
        super().__init__()
        self.outage = outage
        self._pinged = False

    def _down(self) -> None:
        raise StoreUnavailable("redis", f"declared outage ({self.outage})")

    async def ping(self) -> None:
        if self.outage == "down-later" and not self._pinged:
            self._pinged = True
            return
        self._down()

    async def get(self, key: str) -> bytes | None:
        self._down()
        return None

    async def set_nx_get(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        self._down()
        return None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._down()

    async def delete(self, key: str) -> None:
        self._down()


def nonce_store_for(redis_url: str | None, outage: str | None = None) -> NonceStore:
    """The store a config asks for: Redis when a URL is given, else memory (maybe down)."""
    if redis_url:
        return RedisNonceStore(redis_url)
    return OutageNonceStore(outage) if outage else MemoryNonceStore()
