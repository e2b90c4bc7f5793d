"""Memory per virtual device: 100,000 devices in one process, idle and scheduled.

*Idle* is what the soak runner holds per device once every device has claimed:
the ``VirtualDevice`` (identity, secret, pre-formatted body parts, headers) and
its cached oracle expectation, for a fleet of the soak file's cohort mix scaled
to N. *Scheduled* adds one pending asyncio task per device waiting for its slot
on the open-model timeline: an upper bound, since the runner creates tasks only
as they fall due. RSS is read from /proc (resident now, not the peak), after a
garbage collection, before and after; startup time is the time to build it all.

Run: ``python -m benchmarks.memory --devices 100000`` (prints one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from harness.oracle import ServerProfile, check_category, expect_send
from harness.run import SoakOptions
from harness.run.options import prepare_fleet

GOAL_BYTES = 1 << 30
GOAL_STARTUP_S = 10.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size now (Linux /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * _PAGE


async def _measure(n: int, fleet_file: str) -> dict[str, Any]:
    gc.collect()
    base = rss_bytes()
    t0 = time.perf_counter()
    fleet = prepare_fleet(SoakOptions(fleet=fleet_file, devices=n))
    profile = ServerProfile()
    devices = {}
    expectations = {}
    for i in range(len(fleet)):
        dev = fleet.device(i)
        devices[i] = dev
        expectations[i] = (expect_send(profile, dev), check_category(dev))
    idle_s = time.perf_counter() - t0
    gc.collect()
    idle = rss_bytes()

    loop = asyncio.get_running_loop()
    start = loop.time() + 3600.0
    tasks = [asyncio.create_task(asyncio.sleep(start + i * 0.001 - loop.time())) for i in range(n)]
    await asyncio.sleep(0)  # every task started and parked on its timer
    scheduled_s = time.perf_counter() - t0
    gc.collect()
    scheduled = rss_bytes()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(devices) == len(expectations) == n
    return {
        "devices": n,
        "fleet": fleet_file,
        "rss_before_bytes": base,
        "rss_idle_bytes": idle,
        "rss_scheduled_bytes": scheduled,
        "bytes_per_device_idle": (idle - base) / n,
        "bytes_per_device_scheduled": (scheduled - base) / n,
        "startup_idle_s": idle_s,
        "startup_scheduled_s": scheduled_s,
        "goal_rss_bytes": GOAL_BYTES,
        "goal_startup_s": GOAL_STARTUP_S,
        "within_goals": scheduled < GOAL_BYTES and scheduled_s < GOAL_STARTUP_S,
    }


def measure(n: int, fleet_file: str = "fleets/soak.toml") -> dict[str, Any]:
    return asyncio.run(_measure(n, fleet_file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="memory per virtual device")
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--fleet", default="fleets/soak.toml")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.stdout.write(json.dumps(measure(args.devices, args.fleet)) + "\n")


if __name__ == "__main__":
    main()
