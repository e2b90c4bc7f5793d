"""One command for the issue-6 benchmark: ``python -m benchmarks.run [--smoke] [--json FILE]``.

Starts the null claim server (``benchmarks.null_server``) in its own process
and runs, one after the other and each in its own process, against it:

- the harness hot path (``harness.run``) kept-alive on the soak fleet, against a
  second null server answering that fleet as the oracle says v5.0 does;
- the harness hot path (``harness.run``) kept-alive and with a fresh
  connection per claim, full per-claim work, pyjwt signature check on 1 in
  ``--verify-every`` 200s; kept-alive once more with ``--workers`` processes
  (default: one per core, as ``harness soak --target`` runs);
- the minimal protocol + transport + results loop (``benchmarks.hotpath``): the same
  work written plainly;
- Locust FastHttpUser, headless, 50 users, nonce + HMAC per task;
- wrk, 1 thread, 50 connections, one fixed claim body (no HMAC, no checks);

then the reference server's own claims/s (harness kept-alive against
``EmbeddedServer(mode="process")``), the memory-per-device run and issue 15's
MQTT session benchmark (``benchmarks.mqtt_sessions``: ``--mqtt-sessions``
``DeviceSession``s in one process against a plain paho-mqtt loop). It prints a
table with the ratios the issues set as goals and writes everything as JSON.
It is a benchmark, not a test: ``--smoke`` runs each part for about a second
to show that it works and says nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import mqtt_sessions
from benchmarks.fleet import DEFAULT_DEVICES, bench_fleet
from harness.workers import default_workers

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 50
GOAL_VS_LOCUST = 3.0
GOAL_VS_WRK = 0.30
GOAL_SOAK_VS_LOCUST = 5.0
SOAK_FLEET = "fleets/soak.toml"  # the fleet users run: every scenario, 200s, 4xx and replays
PART_NAMES = (
    "harness_keepalive",
    "harness_soak_fleet",
    "harness_keepalive_workers",
    "harness_fresh",
    "loop_keepalive",
    "locust",
    "wrk",
    "reference_server",
    "memory",
    "mqtt_sessions",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --pin: the null server on the first usable core, one-process clients on the others, so
# the scheduler never puts a client and the server on one core for a while, for every
# client alike. Set by parse_args; None = no pinning.
_PIN: tuple[set[int], set[int]] | None = None


def _pinned(cores: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn restricting the child to ``cores`` (None: leave it unpinned)."""
    if cores is None:
        return None
    return lambda: os.sched_setaffinity(0, cores)


def _run(
    cmd: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    pin: bool = True,
) -> tuple[str, float]:
    """Run one part's process; its stdout and the CPU seconds it (and its children) used."""
    before = _children_cpu()
    cores = _PIN[1] if _PIN is not None and pin else None
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_pinned(cores),
    )
    cpu = _children_cpu() - before
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)}")
    return proc.stdout, cpu


def _last_json(stdout: str) -> Any:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError("no output")
    return json.loads(lines[-1])


class NullServer:
    """The null claim server in its own process, on a free port."""

    def __init__(self, devices: int, fleet: str | None = None) -> None:
        self.devices = devices
        self.fleet = fleet  # answer this fleet's devices as the oracle says (the soak fleet)
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> NullServer:
        cmd = [sys.executable, "-m", "benchmarks.null_server", "--devices", str(self.devices)]
        if self.fleet:
            cmd += ["--fleet", self.fleet]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_pinned(_PIN[0] if _PIN is not None else None),
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        if not line or not line[0].startswith("READY"):
            self.__exit__()
            raise RuntimeError("null server did not start")
        self.port = int(line[0].split()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU the server process has used so far (user + system, from /proc)."""
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the parts ---------------------------------------------------------------------------


def part_harness(
    url: str | None, mode: str, s: argparse.Namespace, workers: int = 1, fleet: str | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.soak_client", "--mode", mode]
    cmd += ["--duration", str(s.duration), "--concurrency", str(CONCURRENCY)]
    cmd += ["--devices", str(s.devices), "--verify-every", str(s.verify_every)]
    cmd += ["--workers", str(workers)]
    if fleet:
        cmd += ["--fleet", fleet]
    if url:
        cmd += ["--url", url]
    # N workers use every core; so does the embedded reference server with its client.
    out, _ = _run(cmd, s.duration + 120, pin=workers == 1 and url is not None)
    return dict(_last_json(out))


def part_loop(url: str, s: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.hotpath", "--url", url, "--mode", "keepalive"]
    cmd += ["--duration", str(s.duration), "--concurrency", str(CONCURRENCY)]
    cmd += ["--devices", str(s.devices), "--verify-every", str(s.verify_every)]
    out, _ = _run(cmd, s.duration + 60)
    return dict(_last_json(out))


def part_locust(url: str, s: argparse.Namespace) -> dict[str, Any]:
    seconds = max(1, math.ceil(s.duration))
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py")]
    cmd += ["--headless", "-u", str(CONCURRENCY), "-r", str(CONCURRENCY * 10)]
    cmd += ["-t", f"{seconds}s", "--host", url, "--only-summary", "--json", "--skip-log"]
    cmd += ["--stop-timeout", "1", "--loglevel", "ERROR"]
    env = _env() | {"BENCH_DEVICES": str(s.devices)}
    out, cpu = _run(cmd, seconds + 90, env)
    start = out.find("[")
    stats = json.loads(out[start:]) if start >= 0 else []
    requests = sum(int(e["num_requests"]) for e in stats)
    failures = sum(int(e["num_failures"]) for e in stats)
    spans = [e["last_request_timestamp"] - e["start_time"] for e in stats if e["num_requests"]]
    elapsed = max(spans) if spans else 0.0
    return {
        "claims": requests,
        "failures": failures,
        "seconds": elapsed,
        "rate": requests / elapsed if elapsed > 0 else 0.0,
        "users": CONCURRENCY,
        "process_cpu_s": cpu,
        "cpu_us_per_claim": cpu / requests * 1e6 if requests else None,
        "note": "process CPU includes locust start-up",
    }


def part_wrk(url: str, s: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk not installed (apt-get install wrk)"}
    dev = bench_fleet(s.devices).device(0)
    import hmac
    from hashlib import sha256

    nonce = "00" * 16
    body = dev.body(nonce, hmac.new(dev.oob, dev.message(nonce), sha256).hexdigest())
    seconds = max(1, math.ceil(s.duration))
    cmd = [wrk, "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "-s"]
    cmd += [str(ROOT / "benchmarks" / "claim.lua"), f"{url}/api/v1/pair/claim"]
    out, cpu = _run(cmd, seconds + 60, _env() | {"CLAIM_BODY": body.decode()})
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if total is None or rate is None:
        raise RuntimeError(f"cannot read wrk output: {out[-200:]!r}")
    requests = int(total[1])
    unit = {"s": 1.0, "ms": 1e-3, "m": 60.0}.get(total[3], 1.0)
    return {
        "claims": requests,
        "seconds": float(total[2]) * unit,
        "rate": float(rate[1]),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "threads": 1,
        "connections": CONCURRENCY,
        "process_cpu_s": cpu,
        "cpu_us_per_claim": cpu / requests * 1e6 if requests else None,
    }


def part_memory(s: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--devices", str(s.memory_devices)]
    out, _ = _run(cmd, 300)
    return dict(_last_json(out))


def part_mqtt(s: argparse.Namespace) -> dict[str, Any]:
    """Issue 15's MQTT sessions, both halves in processes of their own; its JSON file's
    figures (it prints a table, not JSON, on stdout)."""
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        out = Path(tmp) / "mqtt.json"
        cmd = [sys.executable, "-m", "benchmarks.mqtt_sessions", "--json", str(out)]
        cmd += ["--sessions", str(s.mqtt_sessions)] + (["--smoke"] if s.smoke else [])
        _run(cmd, 300 + s.mqtt_sessions / 10, pin=False)  # the client and its broker: both cores
        data = json.loads(out.read_text(encoding="utf-8"))
    failed = [f"{k}: {v['error']}" for k, v in data["parts"].items() if "error" in v]
    if failed:
        return {"error": "; ".join(failed)}
    return {"settings": data["settings"], "parts": data["parts"], "goals": data["goals"]}


def _guard(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part's figures, or its error: one failing tool does not hide the others."""
    sys.stderr.write(f"benchmark: {name} ...\n")
    t0 = time.perf_counter()
    try:
        result = fn()
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["part_wall_s"] = time.perf_counter() - t0
    return result


def _server_share(part: dict[str, Any], server_cpu: float) -> None:
    """How busy the null server was during a part: near 1.0 means it set the pace."""
    part["server_cpu_s"] = server_cpu
    seconds, claims = part.get("seconds"), part.get("claims")
    if isinstance(seconds, int | float) and seconds > 0:
        part["server_cpu_share"] = server_cpu / seconds
    if isinstance(claims, int) and claims > 0:
        part["server_cpu_us_per_claim"] = server_cpu / claims * 1e6


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate (errors last), with every round's rate alongside."""
    ok = sorted((r for r in rounds if _rate(r) is not None), key=lambda r: float(r["rate"]))
    chosen = dict(ok[(len(ok) - 1) // 2] if ok else rounds[0])
    chosen["round_rates"] = [r.get("rate") for r in rounds]
    return chosen


def run_benchmark(s: argparse.Namespace) -> dict[str, Any]:
    """Every part; client parts run ``s.rounds`` times interleaved, the median round kept.

    Interleaving spreads a burst of other work on the machine over all clients
    alike instead of over whichever one happened to be running.
    """
    parts: dict[str, dict[str, Any]] = {}
    clients: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
        "harness_keepalive": ("harness keep-alive", lambda u: part_harness(u, "keepalive", s)),
        "harness_soak_fleet": ("harness keep-alive, soak fleet", None),  # its own server
        "harness_keepalive_workers": (
            f"harness keep-alive, {s.workers} workers",
            lambda u: part_harness(u, "keepalive", s, s.workers),
        ),
        "harness_fresh": ("harness fresh", lambda u: part_harness(u, "fresh", s)),
        "loop_keepalive": ("minimal loop", lambda u: part_loop(u, s)),
        "locust": ("locust", lambda u: part_locust(u, s)),
        "wrk": ("wrk", lambda u: part_wrk(u, s)),
    }
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
    soak_path = str(ROOT / SOAK_FLEET)
    with NullServer(s.devices) as null, NullServer(s.devices, soak_path) as soak:
        for i in range(s.rounds):
            for name, (label, fn) in clients.items():
                tag = f"{label} (round {i + 1}/{s.rounds})" if s.rounds > 1 else label
                server = soak if fn is None else null
                if fn is None:  # the soak fleet against the null server answering it
                    fn = lambda u: part_harness(u, "keepalive", s, fleet=soak_path)  # noqa: E731
                before = server.cpu_seconds()
                result = _guard(tag, lambda fn=fn, u=server.url: fn(u))
                _server_share(result, server.cpu_seconds() - before)
                rounds[name].append(result)
    for name in clients:
        parts[name] = _median_round(rounds[name])
    parts["reference_server"] = _guard(
        "reference server", lambda: part_harness(None, "keepalive", s)
    )
    parts["memory"] = _guard("memory", lambda: part_memory(s))
    parts["mqtt_sessions"] = _guard("mqtt sessions", lambda: part_mqtt(s))
    return {
        "machine": machine(),
        "settings": {
            "smoke": s.smoke,
            "duration_s": s.duration,
            "rounds": s.rounds,
            "concurrency": CONCURRENCY,
            "devices": s.devices,
            "verify_every": s.verify_every,
            "workers": s.workers,
            "pinned": s.pin,
            "memory_devices": s.memory_devices,
            "mqtt_sessions": s.mqtt_sessions,
        },
        "parts": parts,
        "ratios": ratios(rounds),
    }


def _rate(part: dict[str, Any]) -> float | None:
    rate = part.get("rate")
    return float(rate) if isinstance(rate, int | float) and rate > 0 else None


def _ratio_set(parts: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    keep, fresh = _rate(parts["harness_keepalive"]), _rate(parts["harness_fresh"])
    locust, wrk, loop = _rate(parts["locust"]), _rate(parts["wrk"]), _rate(parts["loop_keepalive"])
    workers = _rate(parts["harness_keepalive_workers"])
    soak = _rate(parts["harness_soak_fleet"])
    soak_cpu = parts["harness_soak_fleet"].get("cpu_us_per_claim")
    locust_cpu = parts["locust"].get("cpu_us_per_claim")

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        "keepalive_vs_locust": div(keep, locust),
        "keepalive_vs_wrk": div(keep, wrk),
        "fresh_vs_keepalive": div(fresh, keep),
        "keepalive_vs_minimal_loop": div(keep, loop),
        "keepalive_workers_vs_wrk": div(workers, wrk),
        "keepalive_workers_vs_locust": div(workers, locust),
        "soak_fleet_vs_locust": div(soak, locust),
        # The measure for the fleet users run: Locust's CPU per plain claim request
        # over the harness's per fully judged soak-fleet claim.
        "soak_fleet_vs_locust_cpu": div(locust_cpu, soak_cpu),
    }


def ratios(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The goals' ratios within each round (clients run back to back), then their median.

    A ratio of two parts of the same round compares clients under the same
    background load, which ratios of separately chosen medians would not.
    """
    n = min(len(r) for r in rounds.values())
    per_round = [_ratio_set({name: r[i] for name, r in rounds.items()}) for i in range(n)]
    out: dict[str, Any] = {}
    for key in per_round[0] if per_round else ():
        values = sorted(v for v in (pr[key] for pr in per_round) if v is not None)
        out[key] = values[(len(values) - 1) // 2] if values else None
        out[f"{key}_per_round"] = [pr[key] for pr in per_round]
    vs_locust, vs_wrk = out.get("keepalive_vs_locust"), out.get("keepalive_vs_wrk")
    workers_vs_wrk = out.get("keepalive_workers_vs_wrk")
    out |= {
        "goal_keepalive_vs_locust": GOAL_VS_LOCUST,
        "goal_keepalive_vs_wrk": GOAL_VS_WRK,
        "meets_locust_goal": None if vs_locust is None else vs_locust >= GOAL_VS_LOCUST,
        "meets_wrk_goal": None if vs_wrk is None else vs_wrk >= GOAL_VS_WRK,
        "meets_wrk_goal_with_workers": (
            None if workers_vs_wrk is None else workers_vs_wrk >= GOAL_VS_WRK
        ),
    }
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def table(data: dict[str, Any]) -> str:
    """The console table: one row per client, memory, MQTT sessions, the ratios and goals."""
    p, r = data["parts"], data["ratios"]
    rows = [
        ("harness keep-alive (fleet runner)", p["harness_keepalive"]),
        ("harness keep-alive, soak fleet", p["harness_soak_fleet"]),
        (
            f"harness keep-alive, {data['settings']['workers']} workers",
            p["harness_keepalive_workers"],
        ),
        ("harness fresh connection", p["harness_fresh"]),
        ("minimal loop keep-alive (plain)", p["loop_keepalive"]),
        ("Locust FastHttpUser, 50 users", p["locust"]),
        ("wrk 1 thread 50 conns, no checks", p["wrk"]),
        ("reference server (harness k-a)", p["reference_server"]),
    ]
    out = [f"{'client':<36}{'claims':>10}{'claims/s':>11}{'CPU us/claim':>14}{'server busy':>13}"]
    for name, part in rows:
        if "error" in part or "skipped" in part:
            out.append(f"{name:<36}  {part.get('error') or part.get('skipped')}")
            continue
        cpu = part.get("cpu_us_per_claim")
        shown = f"{cpu:>14.0f}" if isinstance(cpu, int | float) else f"{'-':>14}"
        busy = part.get("server_cpu_share")
        busy_s = f"{busy:>13.0%}" if isinstance(busy, float) else f"{'-':>13}"
        out.append(
            f"{name:<36}{part.get('claims', 0):>10}{part.get('rate', 0.0):>11,.0f}{shown}{busy_s}"
        )
    out.append("(server busy: null server CPU / part duration; near 100% it set the pace)")
    if data["settings"].get("pinned"):
        out.append(
            "(pinned: null server on one core, one-process clients on the others; "
            "the workers row and the reference server use every core)"
        )
    verify = data["settings"]["verify_every"]
    keep = p["harness_keepalive"]
    if "tokens_checked" in keep:
        out.append(
            f"(harness keep-alive: {keep['tokens_checked']:,} tokens checked, "
            f"{keep['signatures_verified']:,} signatures verified, "
            f"{keep.get('pyjwt_cross_checks') or 0:,} pyjwt cross-checks = 1 in {verify}; "
            f"minimal loop: pyjwt signature check on 1 in {verify} 200s)"
        )
    mem = p["memory"]
    if "error" in mem:
        out.append(f"memory: {mem['error']}")
    else:
        mib = 1 << 20
        before, idle = mem["rss_before_bytes"] / mib, mem["rss_idle_bytes"] / mib
        sched = mem["rss_scheduled_bytes"] / mib
        out.append(
            f"memory, {mem['devices']:,} devices: RSS {before:.0f} MiB -> idle {idle:.0f} MiB "
            f"({mem['bytes_per_device_idle']:,.0f} B/device, {mem['startup_idle_s']:.1f} s) -> "
            f"scheduled {sched:.0f} MiB ({mem['bytes_per_device_scheduled']:,.0f} B/device, "
            f"{mem['startup_scheduled_s']:.1f} s)"
        )

    mqtt = p["mqtt_sessions"]
    if "error" in mqtt:
        out.append(f"mqtt sessions: {mqtt['error']}")
    else:
        out.append("mqtt sessions (benchmarks.mqtt_sessions, issue 15):")
        out += ["  " + line for line in mqtt_sessions.table(mqtt, smoke_note=False).splitlines()]

    def shown(value: float, pct: bool) -> str:
        return f"{value:.1%}" if pct else f"{value:.2f}x"  # 29.6%, never a rounded "30%"

    def ratio(key: str, goal: float, pct: bool = False) -> str:
        value = r[key]
        if value is None:
            return "n/a"
        goal_s = f"{goal:.0%}" if pct else f"{goal:g}x"
        line = f"{shown(value, pct)} (goal >= {goal_s}: {'met' if value >= goal else 'NOT met'})"
        rounds = [v for v in r.get(f"{key}_per_round") or () if v is not None]
        if len(rounds) > 1:
            line += f"; rounds {', '.join(shown(v, pct) for v in rounds)}"
        return line

    if data["settings"]["rounds"] > 1:
        out.append("(ratios: median over rounds of each round's own ratio)")
    out.append(f"keep-alive / Locust: {ratio('keepalive_vs_locust', GOAL_VS_LOCUST)}")
    out.append(f"keep-alive / wrk:    {ratio('keepalive_vs_wrk', GOAL_VS_WRK, pct=True)}")
    soak_cpu = ratio("soak_fleet_vs_locust_cpu", GOAL_SOAK_VS_LOCUST)
    out.append(f"soak fleet / Locust, CPU per claim: {soak_cpu}")
    soak_rate = ratio("soak_fleet_vs_locust", GOAL_SOAK_VS_LOCUST)
    out.append(f"soak fleet / Locust, claims/s: {soak_rate}")
    n = data["settings"]["workers"]
    both = ratio("keepalive_workers_vs_wrk", GOAL_VS_WRK, pct=True)
    out.append(f"keep-alive, {n} workers / wrk: {both}")
    if r["fresh_vs_keepalive"] is not None:
        out.append(f"fresh / keep-alive:  {r['fresh_vs_keepalive']:.0%}")
    if data["settings"]["smoke"]:
        out.append("SMOKE RUN: a check that every part works; these figures mean nothing.")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="about 1 s per part; works, not fast")
    parser.add_argument("--duration", type=float, help="seconds per client part (default 10)")
    parser.add_argument("--rounds", type=int, default=1, help="client rounds (median kept)")
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--verify-every", type=int, default=100, metavar="N")
    parser.add_argument("--memory-devices", type=int, help="default 100000 (smoke: 10000)")
    parser.add_argument(
        "--mqtt-sessions",
        type=int,
        help=f"MQTT sessions of the issue-15 part (default {mqtt_sessions.GOAL_SESSIONS}; "
        f"smoke: {mqtt_sessions.SMOKE_SESSIONS})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes of the --workers row (default: harness soak's, one per core)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="null server on one core, one-process clients on the others "
        "(default: on with 2+ usable cores)",
    )
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.smoke else 10.0
    if args.memory_devices is None:
        args.memory_devices = 10_000 if args.smoke else 100_000
    if args.mqtt_sessions is None:
        args.mqtt_sessions = (
            mqtt_sessions.SMOKE_SESSIONS if args.smoke else mqtt_sessions.GOAL_SESSIONS
        )
    positive = ("duration", "rounds", "devices", "verify_every", "memory_devices", "workers")
    for name in (*positive, "mqtt_sessions"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    cores = sorted(os.sched_getaffinity(0))
    if args.pin is None:
        args.pin = len(cores) >= 2
    if args.pin and len(cores) < 2:
        parser.error("--pin needs at least 2 usable cores")
    global _PIN
    _PIN = ({cores[0]}, set(cores[1:])) if args.pin else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = run_benchmark(args)
    print(table(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
