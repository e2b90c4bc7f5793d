"""Issue 15's MQTT session benchmark: ``python -m benchmarks.mqtt_sessions [--sessions N]``.

Two parts, each in its own process (so their RSS figures do not mix), each
against its own embedded Mosquitto (no auth):

- **harness**: N ``DeviceSession``s (``harness.mqtt.session``, what a run's
  ``SessionFleet`` starts per claimed device) in one process under uvloop, as
  soaks run, reporting to a hub that only counts. Each connects with a will,
  subscribes, publishes its retained birth and heartbeats at QoS 1 every
  ``--heartbeat-s``.
- **baseline**: plain paho-mqtt as a user writes it without this tool: one
  ``Client`` per device, ``connect()`` then ``loop_start()`` (a network thread
  per client, the documented idiom), heartbeats by ``publish(qos=1)`` from one
  loop. That thread ``select()``s its sockets, so no client whose socket is a
  file descriptor >= 1024 (``FD_SETSIZE``) ever sees its CONNACK; with three
  descriptors per client (socket + wake-up socketpair) one process holds about
  340. The part stops at the first client past that ceiling (or at
  ``--baseline-sessions``) and says so.

Each part reports: sessions held, RSS growth (before the first session, and
after a steady window with every session connected and heartbeating), connects
per second (start until the last CONNACK), heartbeats acknowledged (PUBACK) per
second over the window, its own and the broker's CPU, and the garbage
collector's pauses (what a process holding many sessions' objects stalls on).
The parent prints a table with the issue's goals: the harness holds N sessions
under 300 MiB, and connects at least 3x as fast as the baseline, measured in the
same round (the machine is shared: the ratio means more than either rate; with
``--rounds`` the median of the rounds' ratios). The harness is also run at the
baseline's session count, for a like-for-like connect ratio.

A benchmark, not a test: the exit code is 0 whether or not a goal is met.
``--smoke`` runs 200 sessions for about a second to show that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_SESSIONS = 10_000
GOAL_RSS_MIB = 300.0
GOAL_CONNECT_RATIO = 3.0
SMOKE_SESSIONS = 200
BASELINE_DEFAULT = 2_000  # the baseline's cap when its select() ceiling is not hit first
FD_SETSIZE = 1024  # select(2) cannot watch a descriptor at or above this
FDS_PER_BASELINE_CLIENT = 3  # its socket and the loop thread's wake-up socketpair
MIB = 1 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


# --- measuring ------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now (``/proc/PID/statm``); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) another process has used so far: the broker's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def raise_fd_limit(need: int) -> dict[str, Any]:
    """Raise this process's soft descriptor limit to the hard one when N sessions need more.

    Each session is one socket here and one in Mosquitto, which inherits the
    limit when started after this.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out: dict[str, Any] = {"soft_before": soft, "hard": hard, "soft": soft, "raised": False}
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        out |= {"soft": hard, "raised": True}
    if hard != resource.RLIM_INFINITY and hard < need:
        out["short"] = f"{need} descriptors needed, the hard limit is {hard}"
    return out


class Meter:
    """Wall time, this process's and the broker's CPU, and garbage-collector pauses, between
    two marks: GC pauses are what a process holding many sessions' objects stalls on."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.gc_pause = self.gc_max = 0.0
        self.full = 0
        self._t = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        pause = time.perf_counter() - self._t
        self.gc_pause += pause
        self.gc_max = max(self.gc_max, pause)
        self.full += info.get("generation") == 2

    def mark(self) -> tuple[float, float, float, float, int]:
        self.gc_max = 0.0
        t = time.perf_counter()
        return t, own_cpu(), cpu_seconds(self.broker_pid), self.gc_pause, self.full

    def since(self, mark: tuple[float, float, float, float, int], name: str) -> dict[str, Any]:
        t, cpu, broker, pause, full = mark
        wall = time.perf_counter() - t
        return {
            f"{name}_wall_s": wall,
            f"{name}_cpu_s": own_cpu() - cpu,
            f"{name}_broker_cpu_s": cpu_seconds(self.broker_pid) - broker,
            f"{name}_gc_pause_s": self.gc_pause - pause,
            f"{name}_gc_max_pause_s": self.gc_max,
            f"{name}_full_collections": self.full - full,
        }

    def close(self) -> None:
        gc.callbacks.remove(self._gc)


def _start_broker() -> Any:
    from harness.mqtt.broker import MosquittoBroker

    return MosquittoBroker(auth=False).start()


def _figures(
    n_asked: int,
    held: int,
    times: tuple[float | None, float | None],
    rss: tuple[int, int, int],
    acks: int,
    meters: dict[str, Any],
    broker: Any,
    heartbeat_s: float,
) -> dict[str, Any]:
    """One part's JSON: the same keys for both parts."""
    connect_s, first_heartbeat_s = times
    before, connected, steady = rss
    growth = steady - before
    window_s = meters["window_wall_s"]
    return {
        "sessions_asked": n_asked,
        "sessions": held,
        "connect_s": connect_s,
        "connects_per_s": held / connect_s if connect_s else 0.0,
        "first_heartbeat_s": first_heartbeat_s,
        "rss_before_bytes": before,
        "rss_connected_bytes": connected,
        "rss_steady_bytes": steady,
        "rss_growth_mib": growth / MIB,
        "kib_per_session": growth / held / 1024 if held else None,
        "heartbeat_s": heartbeat_s,
        "window_s": window_s,
        "heartbeats_acked": acks,
        "heartbeats_per_s": acks / window_s if window_s > 0 else 0.0,
        "heartbeats_offered_per_s": held / heartbeat_s,
        "window_cpu_share": meters["window_cpu_s"] / window_s if window_s > 0 else None,
        "window_broker_cpu_share": meters["window_broker_cpu_s"] / window_s if window_s else None,
        "broker_rss_mib": rss_bytes(broker.proc.pid) / MIB if broker.proc else None,
        **meters,
    }


# --- part A: the harness's sessions ------------------------------------------------------------


class BenchHub:
    """A ``SessionHub`` that only counts: no observer, judge or passwords (no broker auth)."""

    def __init__(self, host: str, port: int, n: int) -> None:
        from harness.mqtt.topics import Topics

        self.host, self.port, self.n = host, port, n
        self.topics = Topics()
        self.acl = False  # no ACL on the benchmark's broker: no isolation probe
        self.stopping = asyncio.Event()
        self.all_connected = asyncio.Event()
        self.all_beat = asyncio.Event()  # every session has had a heartbeat acknowledged
        self.all_connected_at = self.all_beat_at = 0.0
        self.seen: set[str] = set()
        self.beaten: set[str] = set()
        self.online = 0
        self.connects = self.refusals = self.losses = self.heartbeats = 0

    async def grant(self, username: str, password: str) -> None:
        return None

    async def refresh(self, session: Any) -> None:
        return None

    def connected(self, session: Any, session_id: str, code: Any) -> None:
        self.connects += 1
        self.online += 1
        self.seen.add(session.d)
        if len(self.seen) == self.n and not self.all_connected.is_set():
            self.all_connected_at = time.perf_counter()
            self.all_connected.set()

    def refused(self, session: Any, code: Any) -> None:
        self.refusals += 1

    def lost(self, session: Any) -> None:
        self.losses += 1
        self.online -= 1

    def born(self, session: Any, session_id: str) -> None:
        return None

    def heartbeat(self, session: Any, seq: int) -> None:
        self.heartbeats += 1
        if not self.all_beat.is_set():
            self.beaten.add(session.d)
            if len(self.beaten) == self.n:
                self.all_beat_at = time.perf_counter()
                self.all_beat.set()

    def killed(self, session: Any, session_id: str) -> None:
        self.online -= 1

    def closed(self, session: Any, session_id: str) -> None:
        self.online -= 1

    def probed(self, session: Any, refused: str | None) -> None:
        return None

    def peer(self, session: Any) -> str | None:
        return None


async def _lag_probe(lags: list[float], every: float = 0.05) -> None:
    """How late the event loop runs a timer: a stalled loop delays every session at once."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(every)
        lags.append(time.perf_counter() - t - every)


async def _harness(n: int, heartbeat_s: float, window_s: float, settle_s: float) -> dict[str, Any]:
    from harness.mqtt.client import collector_for_sessions
    from harness.mqtt.session import DeviceSession, Tokens
    from harness.mqtt.spec import SessionSpec

    limits = raise_fd_limit(n + 256)
    collector = contextlib.ExitStack()
    broker = await asyncio.to_thread(_start_broker)
    meter = Meter(broker.proc.pid)
    try:
        hub = BenchHub(broker.host, broker.port, n)
        # time_scale only scales the reconnect back-off here (heartbeat_s is given as is).
        spec = SessionSpec(mqtt=True, time_scale=0.1, refresh=False, isolation_probe=False)
        rng = random.Random(0)
        collector.enter_context(collector_for_sessions())  # as SessionFleet.start sets it
        gc.collect()
        before = rss_bytes()
        mark = meter.mark()
        sessions = [
            DeviceSession(
                hub,
                f"bench-{i:05d}",
                f"bench-{i:05d}",
                "bench",
                spec,
                Tokens("x", None, 0, time.monotonic()),
                heartbeat_s,
                rng,  # one for the fleet, as SessionFleet.claimed gives them
            )
            for i in range(n)
        ]
        for session in sessions:
            session.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.all_connected.wait(), max(60.0, n / 100))
        connect_s = hub.all_connected_at - mark[0] if hub.all_connected.is_set() else None
        meters = meter.since(mark, "connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.all_beat.wait(), max(30.0, n / 200))
        first_beat = hub.all_beat_at - hub.all_connected_at if hub.all_beat.is_set() else None
        await asyncio.sleep(settle_s)
        gc.collect()
        connected = rss_bytes()
        lags: list[float] = []
        probe = asyncio.get_running_loop().create_task(_lag_probe(lags))
        acks0, mark = hub.heartbeats, meter.mark()
        await asyncio.sleep(window_s)
        acks = hub.heartbeats - acks0
        meters |= meter.since(mark, "window")
        probe.cancel()
        gc.collect()
        steady = rss_bytes()
        out = _figures(
            n,
            hub.online,
            (connect_s, first_beat),
            (before, connected, steady),
            acks,
            meters,
            broker,
            heartbeat_s,
        )
        lags.sort()
        out |= {
            "part": "harness",
            "client": "harness.mqtt.session.DeviceSession (aiomqtt), one process, uvloop",
            "connects": hub.connects,
            "refusals": hub.refusals,
            "losses": hub.losses,
            "window_loop_lag_p50_ms": lags[len(lags) // 2] * 1000 if lags else None,
            "window_loop_lag_max_ms": lags[-1] * 1000 if lags else None,
            "fd_limit": limits,
            "threads": threading.active_count(),
        }
        hub.stopping.set()
        tasks = [s.task for s in sessions if s.task is not None]
        t1 = time.perf_counter()
        _, pending = await asyncio.wait(tasks, timeout=60.0)
        for task in pending:
            task.cancel()
        out["stop_s"] = time.perf_counter() - t1
        out["stopped_cleanly"] = not pending
        return out
    finally:
        collector.close()
        meter.close()
        await asyncio.to_thread(broker.close)


def harness_part(n: int, heartbeat_s: float, window_s: float, settle_s: float) -> dict[str, Any]:
    """Part A in this process, under uvloop as soaks run (``run_soak_sync``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_harness(n, heartbeat_s, window_s, settle_s))
    return uvloop.run(_harness(n, heartbeat_s, window_s, settle_s))


# --- part B: plain paho-mqtt, a thread per client ----------------------------------------------


def _highest_fd(client: Any) -> int:
    """The highest descriptor a threaded paho client's ``select()`` watches: its socket and
    its wake-up socketpair's read end (paho's own attribute; -1 if absent)."""
    socks = (client.socket(), getattr(client, "_sockpairR", None))
    return max((s.fileno() for s in socks if s is not None), default=-1)


class _Counts:
    """What the baseline's callbacks (on every client's own thread) count, under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.target = 0  # clients started so far: all_connected compares against it
        self.connected = self.acks = 0
        self.last_connect = self.all_beat_at = 0.0
        self.all_connected = threading.Event()
        self.all_beat = threading.Event()
        self.beaten: set[int] = set()

    def on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        if code.is_failure:
            return
        with self.lock:
            self.connected += 1
            self.last_connect = time.perf_counter()
            if self.target and self.connected >= self.target:
                self.all_connected.set()

    def on_publish(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        with self.lock:
            self.acks += 1
            if not self.all_beat.is_set():
                self.beaten.add(id(client))
                if len(self.beaten) >= self.target:
                    self.all_beat_at = time.perf_counter()
                    self.all_beat.set()

    def started(self, n: int) -> None:
        with self.lock:
            self.target = n
            if self.connected >= n:
                self.all_connected.set()


def baseline_part(n: int, heartbeat_s: float, window_s: float, settle_s: float) -> dict[str, Any]:
    """Part B: what a user writes with paho-mqtt alone, measured like part A."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from harness.mqtt.topics import Topics

    limits = raise_fd_limit(FDS_PER_BASELINE_CLIENT * n + 256)
    broker = _start_broker()
    meter = Meter(broker.proc.pid)
    topics = Topics()
    counts = _Counts()
    clients: list[Any] = []
    dead: Any = None
    stopped_early: str | None = None
    stop = threading.Event()

    def heartbeats(first_due: float) -> None:
        """The user's loop: every interval, one QoS 1 heartbeat per client."""
        seq, due = 0, first_due
        while not stop.is_set():
            for i, c in enumerate(clients):
                payload = json.dumps({"seq": seq, "sent_at": time.time()}).encode()
                c.publish(topics.heartbeat(f"bench-{i:05d}"), payload, qos=1)
            seq += 1
            due += heartbeat_s
            stop.wait(max(due - time.monotonic(), 0.0))

    try:
        gc.collect()
        before = rss_bytes()
        mark = meter.mark()
        for i in range(n):
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"bench-{i:05d}", protocol=mqtt.MQTTv5
            )
            c.on_connect = counts.on_connect
            c.on_publish = counts.on_publish
            c.connect(broker.host, broker.port)
            c.loop_start()
            if _highest_fd(c) >= FD_SETSIZE:  # its thread's select() fails: never connects
                c.disconnect()
                dead = c  # its thread retries after 1 s: stopped after the measuring
                stopped_early = (
                    f"stopped at {i:,} clients: loop_start()'s thread select()s its sockets, "
                    f"and client {i + 1:,}'s are descriptors >= {FD_SETSIZE} (FD_SETSIZE), "
                    "which never see a CONNACK"
                )
                break
            clients.append(c)
        counts.started(len(clients))
        counts.all_connected.wait(max(60.0, len(clients) / 50))
        with counts.lock:
            held = counts.connected
            done = counts.all_connected.is_set()
            connect_s = counts.last_connect - mark[0] if done else None
            connected_at = counts.last_connect
        meters = meter.since(mark, "connect")
        first_due = time.monotonic()
        beater = threading.Thread(
            target=heartbeats, args=(first_due,), name="heartbeats", daemon=True
        )
        beater.start()
        counts.all_beat.wait(max(30.0, held / 200))
        first_beat = counts.all_beat_at - connected_at if counts.all_beat.is_set() else None
        time.sleep(settle_s)
        # The loop sends in bursts: start the window between two, so that it holds as many
        # bursts as intervals.
        phase = (time.monotonic() - first_due) % heartbeat_s
        time.sleep((heartbeat_s / 2 - phase) % heartbeat_s)
        gc.collect()
        connected = rss_bytes()
        with counts.lock:
            acks0 = counts.acks
        mark = meter.mark()
        time.sleep(window_s)
        with counts.lock:
            acks = counts.acks - acks0
        meters |= meter.since(mark, "window")
        gc.collect()
        steady = rss_bytes()
        out = _figures(
            n,
            held,
            (connect_s, first_beat),
            (before, connected, steady),
            acks,
            meters,
            broker,
            heartbeat_s,
        )
        out |= {
            "part": "baseline",
            "client": "paho-mqtt Client + connect() + loop_start() per client (thread each)",
            "clients_started": len(clients),
            "stopped_early": stopped_early,
            "fd_limit": limits,
            "threads": threading.active_count(),
        }
        stop.set()
        beater.join(5)
        t1 = time.perf_counter()
        for c in clients:
            c.disconnect()
        if dead is not None:
            clients.append(dead)
        for c in clients:
            c.loop_stop()
        out["stop_s"] = time.perf_counter() - t1
        out["stopped_cleanly"] = True
        return out
    finally:
        stop.set()
        meter.close()
        broker.close()


# --- the parent: both parts, the table, the goals ------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_part(part: str, n: int, s: argparse.Namespace) -> dict[str, Any]:
    """One part in its own process (its RSS is its own); its JSON, or the error it died of."""
    cmd = [sys.executable, "-m", "benchmarks.mqtt_sessions", "--part", part, "--sessions", str(n)]
    cmd += ["--heartbeat-s", str(s.heartbeat_s), "--window-s", str(s.window_s)]
    cmd += ["--settle-s", str(s.settle_s)]
    sys.stderr.write(f"mqtt sessions: {part}, {n:,} sessions ...\n")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300 + n / 20 + 2 * (s.window_s + s.settle_s),
        )
    except subprocess.TimeoutExpired:
        return {"part": part, "error": "timed out", "part_wall_s": time.perf_counter() - t0}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return {"part": part, "error": f"exit {proc.returncode}: {tail}"}
    out = dict(json.loads(lines[-1]))
    out["part_wall_s"] = time.perf_counter() - t0
    return out


def _rate(part: dict[str, Any], key: str) -> float | None:
    value = part.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _median(values: list[float | None]) -> float | None:
    """The lower median of the values there are (run.py's rule), None if none."""
    ok = sorted(v for v in values if v is not None)
    return ok[(len(ok) - 1) // 2] if ok else None


def _ratios(parts: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """One round's ratios: parts measured back to back, under the same background load."""
    harness, baseline = parts["harness"], parts["baseline"]
    same_n = parts.get("harness_at_baseline_n", {})
    return {
        "connect_ratio": _div(_rate(harness, "connects_per_s"), _rate(baseline, "connects_per_s")),
        "connect_ratio_same_n": _div(
            _rate(same_n, "connects_per_s"), _rate(baseline, "connects_per_s")
        ),
        "memory_per_session_ratio": _div(
            _rate(baseline, "kib_per_session"), _rate(harness, "kib_per_session")
        ),
    }


def goals(rounds: list[dict[str, dict[str, Any]]], n: int) -> dict[str, Any]:
    """The issue's two goals: the median of each round's own connect ratio, and the memory
    goal held in every round (the worst round's RSS growth is the figure)."""
    per_round = [_ratios(r) for r in rounds]
    harness = [r["harness"] for r in rounds]
    growths = [h.get("rss_growth_mib") for h in harness]
    held = min(int(h.get("sessions") or 0) for h in harness)
    growth = max((g for g in growths if isinstance(g, int | float)), default=None)
    under = None if growth is None else held >= n and growth < GOAL_RSS_MIB
    out: dict[str, Any] = {
        "goal_sessions": n,
        "goal_rss_mib": GOAL_RSS_MIB,
        "goal_connect_ratio": GOAL_CONNECT_RATIO,
        "harness_sessions_held": held,
        "harness_rss_growth_mib": growth,
        "meets_memory_goal": under,
    }
    for key in per_round[0]:
        out[key] = _median([r[key] for r in per_round])
        out[f"{key}_per_round"] = [r[key] for r in per_round]
    ratio = out["connect_ratio"]
    out["meets_connect_goal"] = None if ratio is None else ratio >= GOAL_CONNECT_RATIO
    return out


def _median_round(rounds: list[dict[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    """The part's round with the median connect rate, every round's rate alongside."""
    runs = [r[name] for r in rounds if name in r]
    ok = sorted((p for p in runs if _rate(p, "connects_per_s")), key=lambda p: p["connects_per_s"])
    chosen = dict(ok[(len(ok) - 1) // 2] if ok else runs[0])
    chosen["round_connects_per_s"] = [p.get("connects_per_s") for p in runs]
    return chosen


def run_benchmark(s: argparse.Namespace) -> dict[str, Any]:
    """Both parts ``--rounds`` times, interleaved (a burst of other work on the shared machine
    then falls on both alike), and the harness again at the session count the baseline held."""
    load = list(os.getloadavg())
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(s.rounds):
        if s.rounds > 1:
            sys.stderr.write(f"mqtt sessions: round {i + 1}/{s.rounds}\n")
        parts = {
            "harness": run_part("harness", s.sessions, s),
            "baseline": run_part("baseline", s.baseline_sessions, s),
        }
        held = parts["baseline"].get("sessions")
        if isinstance(held, int) and 0 < held < s.sessions:
            parts["harness_at_baseline_n"] = run_part("harness", held, s)
        rounds.append(parts)
    names = [name for name in LABELS if any(name in r for r in rounds)]
    return {
        "machine": {
            "nproc": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_at_start": load,
        },
        "settings": {
            "smoke": s.smoke,
            "sessions": s.sessions,
            "baseline_sessions": s.baseline_sessions,
            "heartbeat_s": s.heartbeat_s,
            "window_s": s.window_s,
            "settle_s": s.settle_s,
            "rounds": s.rounds,
        },
        "parts": {name: _median_round(rounds, name) for name in names},
        "goals": goals(rounds, s.sessions),
    }


LABELS = {
    "harness": "harness DeviceSession (aiomqtt)",
    "baseline": "paho loop_start, thread/client",
    "harness_at_baseline_n": "harness, baseline's N",
}


def table(data: dict[str, Any], smoke_note: bool = True) -> str:
    """The console table: a row per part, then the goals and ratios (``benchmarks.run``
    indents it into its own and says "smoke" once, hence ``smoke_note``)."""
    out = [
        f"{'client':<34}{'sessions':>9}{'MiB':>8}{'KiB/sess':>10}{'connects/s':>12}"
        f"{'hb/s':>9}{'of offered':>11}{'CPU':>6}"
    ]
    for name, part in data["parts"].items():
        label = LABELS.get(name, name)
        if "error" in part:
            out.append(f"{label:<34}  {part['error']}")
            continue
        kib = part.get("kib_per_session")
        offered = part.get("heartbeats_offered_per_s") or 0.0
        share = part["heartbeats_per_s"] / offered if offered else 0.0
        cpu = part.get("window_cpu_share")
        out.append(
            f"{label:<34}{part['sessions']:>9,}{part['rss_growth_mib']:>8.1f}"
            f"{kib if kib is not None else 0.0:>10.1f}{part['connects_per_s']:>12,.0f}"
            f"{part['heartbeats_per_s']:>9,.0f}{share:>11.0%}"
            f"{cpu if cpu is not None else 0.0:>6.0%}"
        )
    base, harness = data["parts"]["baseline"], data["parts"]["harness"]
    if base.get("stopped_early"):
        out.append(f"(baseline {base['stopped_early']})")
    if "connect_gc_pause_s" in harness:
        out.append(
            f"(harness: the garbage collector stopped its loop {harness['connect_gc_pause_s']:.1f}"
            f" s of the {harness['connect_wall_s']:.1f} s connect phase "
            f"({harness['connect_full_collections']} full collections) and "
            f"{harness['window_gc_pause_s']:.1f} s of the {harness['window_wall_s']:.1f} s "
            f"window; longest pause {harness['window_gc_max_pause_s'] * 1000:,.0f} ms)"
        )
    s = data["settings"]
    out.append(
        f"(MiB: RSS growth from before the first session to after a {s['window_s']:g} s "
        f"window with all connected; hb/s: PUBACKs per second in that window, one heartbeat "
        f"per session every {s['heartbeat_s']:g} s offered; CPU: the client process in it)"
    )
    g = data["goals"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    growth = g["harness_rss_growth_mib"]
    growth_s = f"{growth:.1f} MiB" if isinstance(growth, int | float) else "n/a"
    out.append(
        f"harness, {g['harness_sessions_held']:,} of {g['goal_sessions']:,} sessions in "
        f"{growth_s} (goal: all, under {g['goal_rss_mib']:g} MiB): "
        f"{verdict(g['meets_memory_goal'])}"
    )

    def ratio(key: str) -> str:
        value = g.get(key)
        line = f"{value:.2f}x" if value is not None else "n/a"
        rounds = [v for v in g.get(f"{key}_per_round") or () if v is not None]
        if len(rounds) > 1:
            line += f" (median; rounds {', '.join(f'{v:.2f}x' for v in rounds)})"
        return line

    out.append(
        f"connects/s, harness / baseline: {ratio('connect_ratio')} "
        f"(goal >= {g['goal_connect_ratio']:g}x): {verdict(g['meets_connect_goal'])}"
    )
    if g.get("connect_ratio_same_n") is not None:
        out.append(
            f"connects/s at the baseline's N, harness / baseline: {ratio('connect_ratio_same_n')}"
        )
    if s["smoke"] and smoke_note:
        out.append("SMOKE RUN: a check that both parts work; these figures mean nothing.")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mqtt_sessions", description=__doc__)
    parser.add_argument("--sessions", type=int, help=f"harness sessions (default {GOAL_SESSIONS})")
    parser.add_argument(
        "--baseline-sessions",
        type=int,
        help=f"most baseline clients (default min(sessions, {BASELINE_DEFAULT})); "
        f"it stops earlier at select()'s ceiling",
    )
    parser.add_argument("--heartbeat-s", type=float, help="heartbeat interval (default 2)")
    parser.add_argument("--window-s", type=float, help="heartbeat window (default 10)")
    parser.add_argument("--settle-s", type=float, help="wait after the last CONNACK (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SESSIONS} sessions, ~1 s")
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    parser.add_argument("--part", choices=("harness", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "sessions": SMOKE_SESSIONS if smoke else GOAL_SESSIONS,
        "heartbeat_s": 0.5 if smoke else 2.0,
        "window_s": 1.0 if smoke else 10.0,
        "settle_s": 0.5 if smoke else 2.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.baseline_sessions is None:
        args.baseline_sessions = min(args.sessions, BASELINE_DEFAULT)
    for name in ("sessions", "baseline_sessions", "heartbeat_s", "window_s", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    # Whole heartbeat intervals: the baseline's loop sends in bursts, one per interval.
    args.window_s = max(1, round(args.window_s / args.heartbeat_s)) * args.heartbeat_s
    if args.settle_s < 0:
        parser.error("--settle-s must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part is not None:  # one part, in this (child) process: one JSON line
        fn = harness_part if args.part == "harness" else baseline_part
        result = fn(args.sessions, args.heartbeat_s, args.window_s, args.settle_s)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        os._exit(0)  # paho's daemon threads and the default executor need no joining
    data = run_benchmark(args)
    print(table(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
