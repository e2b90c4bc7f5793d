"""Device and child registry: memory (embedded) or PostgreSQL (asyncpg), one small interface.

Devices and children are stored lower-case (the checklist's ``devices_device_id_lower``
constraint) and looked up by the normalised ID. Auto-registration is an
``INSERT ... ON CONFLICT DO NOTHING`` whose row count says whether this request
created the device, so concurrent first claims count one registration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from harness.protocol import normalize_id
from harness.server.seed import Seed
from harness.server.stores import StoreUnavailable


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    oob_secret: bytes
    is_active: bool


class Registry(Protocol):
    """Where devices (with their OOB secret) and child profiles live."""

    backend: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` when the registry cannot be used."""
        ...

    async def get_device(self, device_id: str) -> DeviceRecord | None: ...

    async def register_device(self, device_id: str, oob_secret: bytes) -> bool:
        """Insert an active device unless it exists; True when this call inserted it."""
        ...

    async def child_is_active(self, child_id: str) -> bool | None:
        """None when the child is unknown, else whether it is active."""
        ...

    async def load_seed(self, seed: Seed) -> None:
        """Insert or update the seed's rows (the seed wins)."""
        ...


class MemoryRegistry:
    """Dictionaries keyed by the lower-case ID.

    The device lookup and the insert each wait ``lookup_delay_s`` (1 ms by default)
    as a database round trip would. That wait is what keeps the v5 race window (steps 3..8)
    open in the embedded server as it is in production; it adds latency, not
    CPU, so throughput is unaffected.
    """

    backend = "memory"

    def __init__(self, lookup_delay_s: float = 0.001) -> None:
        self.lookup_delay_s = lookup_delay_s
        self.devices: dict[str, DeviceRecord] = {}
        self.children: dict[str, bool] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        await asyncio.sleep(self.lookup_delay_s)
        return self.devices.get(normalize_id(device_id))

    async def register_device(self, device_id: str, oob_secret: bytes) -> bool:
        await asyncio.sleep(self.lookup_delay_s)  # an INSERT is a round trip too
        key = normalize_id(device_id)
        inserted = key not in self.devices
        if inserted:
            self.devices[key] = DeviceRecord(key, bytes(oob_secret), True)
        return inserted

    async def child_is_active(self, child_id: str) -> bool | None:
        return self.children.get(normalize_id(child_id))

    async def load_seed(self, seed: Seed) -> None:
        for dev in seed.devices:
            key = normalize_id(dev.device_id)
            self.devices[key] = DeviceRecord(key, dev.oob_secret, dev.is_active)
        for child in seed.children:
            self.children[normalize_id(child.child_id)] = child.is_active


SCHEMA_VERSION = 1
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS devices (
    device_id  text PRIMARY KEY,
    oob_secret bytea NOT NULL,
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_device_id_lower CHECK (device_id = lower(device_id)),
    CONSTRAINT devices_oob_secret_len CHECK (octet_length(oob_secret) = 32)
);
CREATE TABLE IF NOT EXISTS children (
    child_id   text PRIMARY KEY,
    is_active  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT children_child_id_lower CHECK (child_id = lower(child_id))
);
""",
}

_GET_DEVICE = "SELECT device_id, oob_secret, is_active FROM devices WHERE device_id = lower($1)"
_REGISTER = (
    "INSERT INTO devices (device_id, oob_secret, is_active) VALUES (lower($1), $2, true) "
    "ON CONFLICT (device_id) DO NOTHING"
)
_GET_CHILD = "SELECT is_active FROM children WHERE child_id = lower($1)"
_UPSERT_DEVICE = (
    "INSERT INTO devices (device_id, oob_secret, is_active) VALUES (lower($1), $2, $3) "
    "ON CONFLICT (device_id) DO UPDATE SET oob_secret = EXCLUDED.oob_secret, "
    "is_active = EXCLUDED.is_active"
)
_UPSERT_CHILD = (
    "INSERT INTO children (child_id, is_active) VALUES (lower($1), $2) "
    "ON CONFLICT (child_id) DO UPDATE SET is_active = EXCLUDED.is_active"
)


async def migrate(conn: Any) -> list[int]:
    """Apply the migrations a database lacks, in one transaction; return the versions applied."""
    async with conn.transaction():
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS claim_schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("LOCK TABLE claim_schema_migrations IN EXCLUSIVE MODE")
        rows = await conn.fetch("SELECT version FROM claim_schema_migrations")
        have = {r["version"] for r in rows}
        applied = []
        for version in sorted(MIGRATIONS):
            if version not in have:
                await conn.execute(MIGRATIONS[version])
                await conn.execute(
                    "INSERT INTO claim_schema_migrations (version) VALUES ($1)", version
                )
                applied.append(version)
    return applied


async def schema_version(conn: Any) -> int:
    """The highest applied migration, 0 when the schema was never created."""
    exists = await conn.fetchval("SELECT to_regclass('claim_schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM claim_schema_migrations"))


class PostgresRegistry:
    """PostgreSQL through an asyncpg pool."""

    backend = "postgresql"

    def __init__(self, url: str, auto_migrate: bool = False, max_size: int = 8) -> None:
        self.url = url
        self.auto_migrate = auto_migrate
        self.max_size = max_size
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.max_size, timeout=5, command_timeout=5
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable("postgresql", f"cannot connect: {exc}") from exc
        async with self._pool.acquire() as conn:
            if self.auto_migrate:
                await migrate(conn)
                version = SCHEMA_VERSION
            else:
                version = await schema_version(conn)
        if version < SCHEMA_VERSION:
            await self.close()  # outside acquire(): closing waits for held connections
            raise StoreUnavailable(
                "postgresql",
                "claim schema missing or old; run `harness serve migrate --database-url URL`"
                " or start with --migrate",
            )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _run(self, method: str, *args: Any) -> Any:

        if self._pool is None:
            raise StoreUnavailable("postgresql", "registry not opened")
        try:
            return await getattr(self._pool, method)(*args)
        except Exception as exc:  # both builds catch Exception around every query
            raise StoreUnavailable("postgresql", type(exc).__name__) from exc

    async def ping(self) -> None:
        await self._run("fetchval", "SELECT 1")

    async def get_device(self, device_id: str) -> DeviceRecord | None:
        row = await self._run("fetchrow", _GET_DEVICE, device_id)
        if row is None:
            return None
        return DeviceRecord(row["device_id"], bytes(row["oob_secret"]), row["is_active"])

    async def register_device(self, device_id: str, oob_secret: bytes) -> bool:
        status = await self._run("execute", _REGISTER, device_id, oob_secret)
        return str(status).endswith(" 1")

    async def child_is_active(self, child_id: str) -> bool | None:
        value = await self._run("fetchval", _GET_CHILD, child_id)
        return None if value is None else bool(value)

    async def load_seed(self, seed: Seed) -> None:
        if self._pool is None:
            raise StoreUnavailable("postgresql", "registry not opened")
        async with self._pool.acquire() as conn, conn.transaction():
            if seed.devices:
                await conn.executemany(
                    _UPSERT_DEVICE,
                    [(d.device_id, d.oob_secret, d.is_active) for d in seed.devices],
                )
            if seed.children:
                await conn.executemany(
                    _UPSERT_CHILD, [(c.child_id, c.is_active) for c in seed.children]
                )


async def migrate_url(url: str) -> list[int]:
    """Connect once and migrate; for ``harness serve migrate``."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable("postgresql", f"cannot connect: {exc}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def registry_for(database_url: str | None, auto_migrate: bool = False) -> Registry:
    """The registry a config asks for: PostgreSQL when a URL is given, else memory."""
    return PostgresRegistry(database_url, auto_migrate) if database_url else MemoryRegistry()
