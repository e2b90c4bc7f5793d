"""Harness-side Prometheus metrics, their three ways out, and the server-counter cross-check.

Every run gets its own ``CollectorRegistry`` (never the process-global one), so
two runs in one process (tests, workers) cannot mix their numbers. Labels are
bounded: outcome (the ``claims.by_status`` key: ``"200"``, ``"409"``,
``"timeout"``, ``"connection_error"``), scenario and check name; never a device ID.

Ways out: ``serve_metrics`` (``--metrics-port``, scraped during the run),
``push_to_gateway`` (``--pushgateway``, final figures under a grouping key with
the run ID and shard) and ``write_textfile`` (``--textfile``, for node_exporter).

With ``--workers`` the claims are made in other processes: each worker keeps its
own ``SoakMetrics`` and a ``SnapshotWriter`` writes its figures to a file every
``SNAPSHOT_FILE_S``; the parent's ``SoakMetrics.follow`` sums the latest file of
every worker on each scrape, so ``/metrics`` has the one-process names and labels.

Wiring into the runner takes three lines::

    metrics = SoakMetrics(run_id=run_id, fleet=fleet.name)
    options.observers.append(metrics)          # on_start / on_claim / on_finish
    stop = serve_metrics(metrics.registry, port)  # optional, during the run
"""

from __future__ import annotations

import json
import math
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client import push_to_gateway as _push
from prometheus_client import write_to_textfile as _write_textfile
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from harness.errors import HarnessInputError
from harness.results import CHECK_NAMES, LatencyHistogram, RunResults

# The seed checklist's latency SLO edges, in seconds.
SLO_BUCKETS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)
PUSH_JOB = "harness_soak"
# How often a --workers worker writes its figures for the parent's /metrics: a scrape
# is at most this old, and a worker writes one small file a second (never per claim).
SNAPSHOT_FILE_S = 1.0

# The v5 server counters the checklist names.
SERVER_COUNTERS: tuple[str, ...] = (
    "claim_success_total",
    "claim_replay_cached_total",
    "claim_replay_conflict_total",
    "claim_auto_register_total",
)
# Extra counts the runner must record for the cross-check (RunResults has no room for them).
EXTRA_IDEMPOTENT_REPLAYS = "idempotent_replays"  # 200s carrying X-Idempotent-Request: true
EXTRA_AUTO_REGISTERED = "auto_registered"  # devices the server auto-registered (per oracle)


def _get(info: object, key: str, default: Any = None) -> Any:
    if isinstance(info, Mapping):
        return info.get(key, default)
    return getattr(info, key, default)


class _Latency:
    """A fixed-bucket histogram as plain counts: one ``bisect`` and two adds per claim."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(SLO_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def raise_to(self, buckets: Sequence[int], total: float) -> None:
        """Take these figures if they hold more claims (a count never goes down)."""
        if sum(buckets) > self.count:
            self.buckets[:] = buckets
            self.sum = total

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, documentation)
        cumulative, rows = 0, []
        for edge, n in zip((*SLO_BUCKETS, math.inf), list(self.buckets), strict=True):
            cumulative += n
            rows.append((floatToGoString(edge), cumulative))
        fam.add_metric([], rows, self.sum)
        return fam


def slo_buckets(hist: LatencyHistogram) -> tuple[list[int], float]:
    """An HDR histogram as per-bucket counts at the SLO edges (exact per edge, 3-digit
    values) and its sum."""
    buckets, previous = [], 0
    for cumulative in hist.cumulative(SLO_BUCKETS):
        buckets.append(cumulative - previous)
        previous = cumulative
    buckets.append(hist.count - previous)
    return buckets, hist.mean * hist.count


def _no_buckets() -> list[int]:
    return [0] * (len(SLO_BUCKETS) + 1)


@dataclass(slots=True)
class MetricsSnapshot:
    """One process's figures as plain data: what a worker writes and the parent sums.

    Counters and histogram buckets add over workers; ``devices`` adds too, since each
    worker runs its own slice of the fleet.
    """

    claims: dict[tuple[str, str], int] = field(default_factory=dict)  # (scenario, outcome)
    latency: list[int] = field(default_factory=_no_buckets)  # per bucket, the last is +Inf
    latency_sum: float = 0.0
    scheduled: list[int] = field(default_factory=_no_buckets)
    scheduled_sum: float = 0.0
    violations: dict[str, int] = field(default_factory=dict)
    devices: int = 0

    @classmethod
    def of_results(cls, results: RunResults) -> MetricsSnapshot:
        """The figures of final results (how ``on_finish`` tops up)."""
        latency, latency_sum = slo_buckets(results.latency)
        scheduled, scheduled_sum = slo_buckets(results.latency_scheduled)
        return cls(
            dict(results.by_scenario),
            latency,
            latency_sum,
            scheduled,
            scheduled_sum,
            {name: t.violations for name, t in results.checks.items()},
        )

    def add(self, other: MetricsSnapshot) -> None:
        for key, n in other.claims.items():
            self.claims[key] = self.claims.get(key, 0) + n
        for mine, theirs in ((self.latency, other.latency), (self.scheduled, other.scheduled)):
            for i, n in enumerate(theirs):
                mine[i] += n
        self.latency_sum += other.latency_sum
        self.scheduled_sum += other.scheduled_sum
        for check, n in other.violations.items():
            self.violations[check] = self.violations.get(check, 0) + n
        self.devices += other.devices

    def to_json(self) -> str:
        return json.dumps(
            {
                "claims": [[s, o, n] for (s, o), n in self.claims.items()],
                "latency": self.latency,
                "latency_sum": self.latency_sum,
                "scheduled": self.scheduled,
                "scheduled_sum": self.scheduled_sum,
                "violations": self.violations,
                "devices": self.devices,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> MetricsSnapshot:
        d = json.loads(text)
        width = len(SLO_BUCKETS) + 1
        if len(d["latency"]) != width or len(d["scheduled"]) != width:
            raise ValueError("snapshot buckets do not match SLO_BUCKETS")
        return cls(
            {(s, o): int(n) for s, o, n in d["claims"]},
            [int(n) for n in d["latency"]],
            float(d["latency_sum"]),
            [int(n) for n in d["scheduled"]],
            float(d["scheduled_sum"]),
            {str(k): int(v) for k, v in d["violations"].items()},
            int(d["devices"]),
        )


def read_snapshot(path: str | os.PathLike[str]) -> MetricsSnapshot | None:
    """A worker's latest snapshot; None when it has not written one (yet, or any more)."""
    try:
        return MetricsSnapshot.from_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Refresh:
    """Registered first, so the registry (which collects in registration order) brings
    the followed workers' figures in before the families are read."""

    def __init__(self, metrics: SoakMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self.metrics.refresh()
        return iter(())


class _ClaimCollector:
    """Claims by (outcome, scenario) and the two latency histograms, collected on scrape.

    Plain integers instead of prometheus_client children: the hot path costs about
    a microsecond instead of six, and a scrape from the ``/metrics`` thread only
    reads (a bucket may run one claim ahead of the sum, never the count: the
    count is the sum of the buckets).
    """

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], list[int]] = {}
        self.latency = _Latency()
        self.scheduled = _Latency()

    def collect(self) -> Iterator[Metric]:
        claims = CounterMetricFamily(
            "harness_claims",
            "Claims sent, by outcome (HTTP status, timeout, connection_error) and scenario.",
            labels=["outcome", "scenario"],
        )
        for (scenario, status), cell in sorted(dict(self.claims).items()):
            claims.add_metric([status, scenario], cell[0])
        yield claims
        yield self.latency.family(
            "harness_claim_latency_seconds",
            "Claim latency from the actual send; buckets at the seed's SLO edges.",
        )
        yield self.scheduled.family(
            "harness_claim_scheduled_latency_seconds",
            "Claim latency from the scheduled send time (shows coordinated omission).",
        )


class SoakMetrics:
    """A run observer that keeps Prometheus metrics on its own registry.

    ``on_claim`` is on the hot path: one dict lookup for the (scenario, outcome)
    cell, one ``bisect`` per histogram. With ``--workers`` the parent's instance
    ``follow``s the workers' snapshot files instead (each worker counts in its own
    instance). ``on_finish`` tops the figures up to the final ``RunResults``, so what
    is pushed or written at the end matches the report.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        run_id: str | None = None,
        fleet: str | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # The workers' snapshot files this registry sums (follow), each file's latest good
        # read; None when the claims are made in this process.
        self._followed: dict[Path, MetricsSnapshot] | None = None
        self._lock = threading.Lock()  # one scrape or on_finish at a time raises the figures
        r.register(_Refresh(self))  # type: ignore[arg-type]
        self._claims = _ClaimCollector()
        r.register(self._claims)  # type: ignore[arg-type]
        self.violations = Counter(
            "harness_check_violations",
            "Oracle check violations, by check.",
            ["check"],
            registry=r,
        )
        self.devices_active = Gauge(
            "harness_devices_active", "Virtual devices taking part in the run.", registry=r
        )
        self.run_info = Gauge(
            "harness_run_info",
            "The run this registry belongs to (value 1).",
            ["run_id", "fleet"],
            registry=r,
        )
        self.running = Gauge("harness_run_running", "1 while the run is in progress.", registry=r)
        self._violation_cells: dict[str, Any] = {
            check: self.violations.labels(check=check) for check in CHECK_NAMES
        }
        self._fleet = fleet or ""
        self._mqtt: Any = None  # the MQTT families, once a run has sessions
        if run_id is not None:
            self.run_info.labels(run_id=run_id, fleet=self._fleet).set(1)

    # -- observer interface -------------------------------------------------------------
    def on_start(self, info: object = None) -> None:
        """Start of run: ``info`` may carry ``run_id``, ``fleet`` and ``devices``."""
        run_id = _get(info, "run_id")
        if run_id is not None:
            self._fleet = str(_get(info, "fleet") or self._fleet)
            self.run_info.clear()
            self.run_info.labels(run_id=str(run_id), fleet=self._fleet).set(1)
        devices = _get(info, "devices")
        if isinstance(devices, int):
            self.devices_active.set(devices)
        self.running.set(1)

    def on_claim(
        self,
        scenario: str,
        status: str,
        latency_s: float,
        scheduled_latency_s: float | None = None,
    ) -> None:
        """One claim sent and answered (or timed out); cheap enough for the hot path."""
        c = self._claims
        cell = c.claims.get((scenario, status))
        if cell is None:
            cell = c.claims.setdefault((scenario, status), [0])
        cell[0] += 1
        h = c.latency
        h.buckets[bisect_left(SLO_BUCKETS, latency_s)] += 1
        h.sum += latency_s
        if scheduled_latency_s is None:
            scheduled_latency_s = latency_s
        h = c.scheduled
        h.buckets[bisect_left(SLO_BUCKETS, scheduled_latency_s)] += 1
        h.sum += scheduled_latency_s

    def on_violation(self, check: str, example: dict[str, Any] | None = None) -> None:
        cell = self._violation_cells.get(check)
        if cell is None:
            cell = self._violation_cells[check] = self.violations.labels(check=check)
        cell.inc()

    def on_mqtt(self, stats: Any) -> None:
        """The run's MQTT side started (or, with --workers, its merged figures at the end):
        its families join this registry (``harness.mqtt.metrics``)."""
        from harness.mqtt.metrics import MqttCollector  # only runs with sessions need it

        if self._mqtt is not None:
            self._mqtt.stats = stats
            return
        self._mqtt = MqttCollector(stats)
        self.registry.register(self._mqtt)  # type: ignore[arg-type]

    def on_finish(self, results: RunResults | None = None) -> None:
        """End of run: top the figures up to the final results (claims made in workers)."""
        with self._lock:
            self._followed = None  # the merged results are final; the workers' files may go
            self.running.set(0)
            self.devices_active.set(0)
            if results is not None:
                self._raise_to(MetricsSnapshot.of_results(results))
        if results is not None and results.mqtt is not None:
            self.on_mqtt(results.mqtt)

    # -- --workers: the figures of other processes --------------------------------------
    def snapshot(self) -> MetricsSnapshot:
        """This process's figures now (a worker's, for the parent); read-only, any thread."""
        c = self._claims
        devices = self.devices_active.collect()[0].samples[0].value
        return MetricsSnapshot(
            {key: cell[0] for key, cell in dict(c.claims).items()},
            list(c.latency.buckets),
            c.latency.sum,
            list(c.scheduled.buckets),
            c.scheduled.sum,
            self._violation_counts(),
            int(devices),
        )

    def follow(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """From now until ``on_finish``, every collect (scrape) takes the sum of the latest
        snapshot in each of ``paths``: the run's claims are made in those workers."""
        with self._lock:
            self._followed = {Path(p): MetricsSnapshot() for p in paths}

    def refresh(self) -> None:
        """Raise the figures to the followed workers' sum (a no-op when following none).

        A file not written yet (or gone) counts with its last good read, so a counter
        never goes down; the devices gauge is the workers' sum as it is now.
        """
        with self._lock:
            if self._followed is None:
                return
            total = MetricsSnapshot()
            for path, last in self._followed.items():
                snap = read_snapshot(path)
                if snap is not None:
                    self._followed[path] = last = snap
                total.add(last)
            self._raise_to(total)
            self.devices_active.set(total.devices)

    def _violation_counts(self) -> dict[str, int]:
        """Violations by check, read from the counter itself (not the registry, whose
        collect would refresh and take the lock again)."""
        return {
            s.labels["check"]: int(s.value)
            for s in self.violations.collect()[0].samples
            if s.name.endswith("_total")
        }

    def _raise_to(self, snap: MetricsSnapshot) -> None:
        """Every figure at least ``snap``'s (counts never go down); call with the lock held."""
        c = self._claims
        for key, n in snap.claims.items():
            cell = c.claims.setdefault(key, [0])
            if n > cell[0]:
                cell[0] = n
        c.latency.raise_to(snap.latency, snap.latency_sum)
        c.scheduled.raise_to(snap.scheduled, snap.scheduled_sum)
        counted = self._violation_counts()
        for check, n in snap.violations.items():
            if n > counted.get(check, 0):
                self.violations.labels(check=check).inc(n - counted.get(check, 0))


def write_snapshot(path: str | os.PathLike[str], metrics: SoakMetrics) -> None:
    """Write ``metrics``' figures atomically (a reader never sees half a file)."""
    tmp = f"{os.fspath(path)}.tmp"
    try:
        Path(tmp).write_text(metrics.snapshot().to_json(), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # live metrics are best effort; the merged results are what count
        pass


class SnapshotWriter(threading.Thread):
    """In a worker: ``metrics``' figures to ``path`` every ``SNAPSHOT_FILE_S`` on a fixed
    schedule (no drift past the second), and once more at ``stop()``, the final ones."""

    def __init__(
        self, path: str | os.PathLike[str], metrics: SoakMetrics, every: float = SNAPSHOT_FILE_S
    ) -> None:
        super().__init__(name="harness-metrics-snapshot", daemon=True)
        self.path, self.metrics, self.every = path, metrics, every
        self.done = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while True:
            due += self.every
            if self.done.wait(max(0.0, due - time.monotonic())):
                return
            write_snapshot(self.path, self.metrics)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)
        write_snapshot(self.path, self.metrics)


# -- ways out ---------------------------------------------------------------------------
@dataclass(slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint; call it (or ``stop()``) to shut it down."""

    port: int
    host: str
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __call__(self) -> None:
        self.stop()


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``/metrics`` for ``registry`` in a daemon thread; port 0 picks a free port."""
    if not 0 <= port <= 65535:
        raise HarnessInputError("--metrics-port", f"{port} is not a TCP port (0..65535)")
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise HarnessInputError(
            "--metrics-port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return MetricsServer(int(httpd.server_address[1]), host, httpd, thread)


_GROUP_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def gateway_url(url: str) -> str:
    """The Pushgateway base URL (``host:port`` means ``http://host:port``); bad input is exit 2,
    so a command can check it before a run instead of after it."""
    text = url.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or not text.split("://", 1)[1]:
        raise HarnessInputError("--pushgateway", f"{url!r} is not an http(s) URL")
    return text


def push_to_gateway(
    url: str,
    registry: CollectorRegistry,
    run_id: str,
    shard: str | int | None = None,
    timeout: float = 10.0,
) -> dict[str, str]:
    """Push the registry (PUT: replaces this group) under job ``harness_soak``.

    The grouping key is ``run_id`` (and ``shard`` when sharded) so shards of one
    run sit side by side and a later run never overwrites an earlier one.
    Returns the grouping key used.
    """
    gateway = gateway_url(url)
    key = {"run_id": str(run_id)}
    if shard is not None:
        key["shard"] = str(shard)
    for name, value in key.items():
        if not value or not _GROUP_VALUE.match(value):
            raise HarnessInputError(name, f"{value!r} cannot be a pushgateway grouping value")
    try:
        _push(gateway, job=PUSH_JOB, registry=registry, grouping_key=key, timeout=timeout)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HarnessInputError("--pushgateway", f"push to {gateway} failed: {reason}") from None
    return key


def _safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) or "run"


def textfile_dir(directory: str | os.PathLike[str]) -> Path:
    """The ``--textfile`` directory; one that does not exist is exit 2."""
    d = Path(directory)
    if not d.is_dir():
        raise HarnessInputError("--textfile", f"{d} is not a directory")
    if not os.access(d, os.W_OK):  # read-only too (EROFS), which even root cannot write
        raise HarnessInputError("--textfile", f"cannot write in {d}: permission denied")
    return d


def check_gateway(url: str, timeout: float = 3.0) -> str:
    """The Pushgateway answers (its ``/-/ready``), checked before a run: a dead one found
    only at the end would cost the run its metrics."""
    gateway = gateway_url(url)
    try:
        with urllib.request.urlopen(f"{gateway}/-/ready", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: a proxy in front may not serve /-/ready, the push will tell
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HarnessInputError("--pushgateway", f"cannot reach {gateway}: {reason}") from None
    return gateway


def write_textfile(
    directory: str | os.PathLike[str], registry: CollectorRegistry, run_id: str
) -> Path:
    """Write ``harness_soak_<run_id>.prom`` atomically for node_exporter's textfile collector."""
    d = textfile_dir(directory)
    path = d / f"harness_soak_{_safe_name(str(run_id))}.prom"
    try:
        _write_textfile(str(path), registry)  # writes a temporary file, then rename(2)
        path.chmod(0o644)
    except OSError as exc:
        raise HarnessInputError(
            "--textfile", f"cannot write {path}: {exc.strerror or exc}"
        ) from None
    return path


# -- server-side counters ---------------------------------------------------------------
def parse_server_counters(text: str, names: Iterable[str] = SERVER_COUNTERS) -> dict[str, float]:
    """Sum each named counter over its label sets in a Prometheus exposition text."""
    wanted = set(names)
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    except ValueError as exc:
        raise HarnessInputError("/metrics", f"not a Prometheus exposition: {exc}") from None
    return found


def scrape_server_counters(
    base_url: str,
    path: str = "/metrics",
    timeout: float = 5.0,
    context: ssl.SSLContext | None = None,
) -> dict[str, float]:
    """The target's v5 claim counters now; ``{}`` when it serves no such ``/metrics``.

    ``context``: the run's TLS context (``harness.tls``), so an https:// target behind a
    private CA (or ``--insecure``) is scraped as its claims are sent.
    """
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return {}
    try:
        return parse_server_counters(text)
    except HarnessInputError:
        return {}


def harness_observed(
    results: RunResults, extra: Mapping[str, int] | None = None
) -> dict[str, int | None]:
    """What the harness saw, in the server counters' terms (None: the runner did not record it).

    A replay is a 200 carrying ``X-Idempotent-Request: true``; a success is any
    other 200 (a newly issued token), so success + replays = all 200s.
    """
    extra = extra or {}
    ok = results.by_status.get("200", 0)
    replays = extra.get(EXTRA_IDEMPOTENT_REPLAYS)
    return {
        "claim_success_total": None if replays is None else ok - replays,
        "claim_replay_cached_total": replays,
        "claim_replay_conflict_total": results.by_status.get("409", 0),
        "claim_auto_register_total": extra.get(EXTRA_AUTO_REGISTERED),
    }


def compare_server_deltas(
    before: Mapping[str, float],
    after: Mapping[str, float],
    results: RunResults,
    extra: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Per v5 counter: the server's own delta over the run, what the harness saw, and agreement.

    ``agrees`` is None when either side is missing (counter not exposed, or not
    recorded by the runner), so a missing number is never reported as agreement.
    """
    seen = harness_observed(results, extra)
    rows = []
    for name in SERVER_COUNTERS:
        delta = None
        if name in before and name in after:
            delta = after[name] - before[name]
        observed = seen[name]
        agrees = None if delta is None or observed is None else round(delta) == observed
        rows.append(
            {
                "counter": name,
                "server_delta": delta,
                "harness_observed": observed,
                "agrees": agrees,
            }
        )
    return rows


def server_counters_section(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``server_counters`` part: rows plus one verdict (None: nothing to compare)."""
    decided = [r["agrees"] for r in rows if r["agrees"] is not None]
    return {"agrees": all(decided) if decided else None, "counters": rows}
