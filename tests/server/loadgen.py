"""Measure the claims/s the reference server sustains: ``python -m tests.server.loadgen``.

The server runs in its own process (``EmbeddedServer(mode="process")``) so the
load generator and the server each get a core. Every request is a valid claim
with a fresh nonce from one of many seeded devices (pre-signed before the clock
starts so signing does not count against the server), sent over many kept-alive
connections, closed loop. Only 200s count as claims.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter

from harness.flags import Flags
from harness.protocol import new_nonce, sign_claim
from harness.protocol.claim import CLAIM_PATH
from harness.server import EmbeddedServer, ServerConfig
from harness.server.seed import Seed, SeedChild, SeedDevice


def make_seed(devices: int) -> Seed:
    return Seed(
        tuple(
            SeedDevice(f"teddy-esp32-load-{i:05d}", os.urandom(32).hex()) for i in range(devices)
        ),
        (SeedChild("child-load"),),
    )


def presign(seed: Seed, count: int, host: str, port: int) -> list[bytes]:
    out = []
    head = (
        f"POST {CLAIM_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    )
    for i in range(count):
        dev = seed.devices[i % len(seed.devices)]
        nonce = new_nonce()
        body = json.dumps(
            {
                "device_id": dev.device_id,
                "child_id": "child-load",
                "nonce": nonce,
                "hmac_hex": sign_claim(dev.device_id, "child-load", nonce, dev.oob_secret),
                "firmware_version": "5.0.1",
            },
            separators=(",", ":"),
        ).encode()
        out.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def worker(
    host: str, port: int, bodies: list[bytes], stop_at: float, stats: Counter[int], lat: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while bodies and time.perf_counter() < stop_at:
            payload = bodies.pop()
            t0 = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            i = head.lower().find(b"content-length:")
            length = int(head[i + 15 : head.index(b"\r\n", i)])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            stats[status] += 1
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), to report CPU cost per claim."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    host: str, port: int, bodies: list[bytes], conns: int, seconds: float, pid: int
) -> dict:
    stats: Counter[int] = Counter()
    lat: list[float] = []
    warm_stop = time.perf_counter() + 1.0  # warm-up second, not counted
    await asyncio.gather(
        *(worker(host, port, bodies, warm_stop, Counter(), []) for _ in range(conns))
    )
    start, cpu0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(
        *(worker(host, port, bodies, start + seconds, stats, lat) for _ in range(conns))
    )
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu0
    lat.sort()
    return {
        "connections": conns,
        "seconds": round(elapsed, 2),
        "requests": sum(stats.values()),
        "by_status": dict(stats),
        "claims_per_s": round(stats[200] / elapsed, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
        "bodies_left": len(bodies),
        "server_cpu_ms_per_request": round(cpu / max(1, sum(stats.values())) * 1000, 3),
        "server_cpu_share": round(cpu / elapsed, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--mode", choices=["process", "thread"], default="process")
    ap.add_argument("--flag", action="append", default=[])
    ap.add_argument("--redis-url")
    ap.add_argument("--database-url")
    ap.add_argument("--max-rate", type=int, default=12000, help="bodies pre-signed per second")
    args = ap.parse_args()
    seed = make_seed(args.devices)
    flags = Flags().with_overrides(args.flag)
    config = ServerConfig(
        flags=flags, seed=seed, redis_url=args.redis_url, database_url=args.database_url,
        migrate=bool(args.database_url),
    )  # fmt: skip
    with EmbeddedServer(config, mode=args.mode) as server:
        bodies = presign(seed, int(args.max_rate * (args.seconds + 1)), "127.0.0.1", server.port)
        import uvloop

        pid = server._process.pid if args.mode == "process" else os.getpid()
        result = uvloop.run(
            drive("127.0.0.1", server.port, bodies, args.connections, args.seconds, pid)
        )
    result.update(
        mode=args.mode,
        flags=flags.describe(),
        stores=config.describe_stores(),
        cpus=os.cpu_count(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
