"""Measure the claims/s the reference server sustains: ``python -m benchmarks.server_loadgen``.

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


WRK_SCRIPT = r"""
-- one pre-signed claim body per line; each wrk thread takes every n-th line
local path = os.getenv("CLAIM_BODIES")
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end
function init(args)
  bodies = {}
  local n = tonumber(os.getenv("WRK_THREADS"))
  local i = 0
  for line in io.lines(path) do
    if i % n == id - 1 then table.insert(bodies, line) end
    i = i + 1
  end
  pos = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  pos = pos + 1
  return wrk.format(nil, "__PATH__", nil, bodies[pos])
end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
    .. '"p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
""".replace("__PATH__", CLAIM_PATH)


def run_wrk(url: str, requests: list[bytes], conns: int, seconds: float, threads: int) -> dict:
    """Drive the server with wrk (C, so the client is not what limits the number)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bodies = os.path.join(tmp, "bodies.txt")
        with open(bodies, "wb") as fh:
            for raw in requests:
                fh.write(raw.split(b"\r\n\r\n", 1)[1] + b"\n")
        script = os.path.join(tmp, "claims.lua")
        with open(script, "w") as fh:
            fh.write(WRK_SCRIPT)
        env = {**os.environ, "CLAIM_BODIES": bodies, "WRK_THREADS": str(threads)}
        cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    elapsed = summary["duration_us"] / 1e6
    ok = summary["requests"] - summary["non2xx"]
    return {
        "client": "wrk",
        "connections": conns,
        "seconds": round(elapsed, 2),
        "requests": summary["requests"],
        "non_2xx": summary["non2xx"],
        "claims_per_s": round(ok / elapsed, 1),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
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
    ap.add_argument("--client", choices=["python", "wrk"], default="python")
    ap.add_argument("--wrk-threads", type=int, default=1)
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
        if args.client == "wrk":
            cpu0 = cpu_seconds(pid)
            result = run_wrk(server.url, bodies, args.connections, args.seconds, args.wrk_threads)
            cpu = cpu_seconds(pid) - cpu0
            result["server_cpu_ms_per_request"] = round(cpu / max(1, result["requests"]) * 1000, 3)
            result["server_cpu_share"] = round(cpu / result["seconds"], 2)
        else:
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
