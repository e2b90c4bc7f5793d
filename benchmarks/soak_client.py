"""The harness's real hot path, ``harness.run.run_soak``, driven for the benchmark.

Closed model, ``concurrency`` devices in flight, for ``duration`` seconds:
exactly what ``harness soak --target URL --concurrency 50 --workers W [--keepalive]`` runs
(plan, per-device bodies and HMACs, transport, oracle judgement, token checks
with pyjwt signature verification on every ``verify_every``-th 200, results).
With no ``--url`` it starts the embedded reference server in its own process
(``EmbeddedServer(mode="process")``): the reference server's own claims/s.

Prints one JSON object (the figures of ``benchmarks.hotpath.figures``).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
from typing import Any

from benchmarks.fleet import BENCH_JWT_SECRET, DEFAULT_DEVICES, bench_fleet
from benchmarks.hotpath import cpu_seconds, figures


def run_soak_client(
    url: str | None,
    mode: str,
    duration: float,
    concurrency: int = 50,
    devices: int = DEFAULT_DEVICES,
    verify_every: int = 100,
    jwt_secret: str = BENCH_JWT_SECRET,
    workers: int = 1,
    fleet: str | None = None,
) -> dict[str, Any]:
    """One run; with ``workers`` > 1 it goes through ``run_job`` as ``--workers`` does, and
    the CPU figure adds the worker processes' (reaped children) to this process's."""
    from harness.run import SoakJob, SoakOptions, run_job, run_soak_sync

    options = SoakOptions(
        target=url,
        fleet=fleet if fleet is not None else bench_fleet(devices),
        duration=duration,
        concurrency=concurrency,
        keepalive=mode == "keepalive",
        max_connections=concurrency,
        token_verify_every=verify_every,
        jwt_secret=jwt_secret if url else None,
        server_mode="process",
    )
    before = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if workers > 1:
        job = run_job(SoakJob(options, workers=workers, out=io.StringIO(), quiet=True))
        assert job.outcome is not None
        outcome = job.outcome
    else:
        outcome = run_soak_sync(options)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu_seconds(before, after)
    cpu += cpu_seconds(children, resource.getrusage(resource.RUSAGE_CHILDREN))
    results = outcome.results
    out = figures(
        results, mode, results.duration_s, cpu, verify_every, outcome.token_signatures_verified
    )
    out["workers"] = workers
    out["tokens_checked"] = outcome.tokens_checked
    # The runner checks every 200's token itself (claims + HS256 with one HMAC when it
    # knows the secret) and cross-checks 1 in ``verify_every`` through pyjwt.
    out["pyjwt_cross_checks"] = getattr(outcome, "tokens_cross_checked", None)
    out["wall_s"] = wall
    out["violations"] = {n: t.violations for n, t in results.checks.items() if t.violations}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="harness soak hot path, one process")
    parser.add_argument("--url", default=None, help="target; default: embedded reference server")
    parser.add_argument("--mode", choices=("keepalive", "fresh"), default="keepalive")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--verify-every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="processes, as --workers")
    parser.add_argument("--fleet", help="this fleet file instead of the bench fleet (soak)")
    args = parser.parse_args(argv)
    out = run_soak_client(
        args.url,
        args.mode,
        args.duration,
        args.concurrency,
        args.devices,
        args.verify_every,
        workers=args.workers,
        fleet=args.fleet,
    )
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
