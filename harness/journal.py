"""The claim journal (``harness soak --journal FILE``): a run's claims as JSON lines, as they
happen, so that a run killed before its report (OOM, SIGKILL, a lost CI runner) can still
be reported on: ``harness report from-journal FILE`` replays the lines.

One file per run, append-only, one JSON object per line:

- ``{"kind": "start", ...}``: the first line, the run's identity (run ID, fleet, seed,
  profile, flags, target or ``"embedded"``, devices, workers, options, thresholds, harness
  version, start time) and its description (``run``, as the report carries it);
- ``{"kind": "claim", "worker", "t_ms", "scenario", "status", "latency_us", "sched_us"}``:
  one per claim sent, whatever came back (``t_ms``: milliseconds since that worker's run
  started; latencies in whole microseconds, exactly what the HDR histograms record, so
  the rebuilt histograms are the run's own);
- ``{"kind": "violation", "worker", "t_ms", "check"}`` (and ``example``, masked, when the
  judge hands one over): one per check violated;
- ``{"kind": "finish", "worker", "t_ms", "finished_at", "results"}``: the last line, the
  final ``RunResults.to_dict()``, written only when the run ends normally.

Cost: ``on_claim`` appends a tuple and nothing else; the lines are formatted and written
in one ``os.write`` per ~100 ms (a timer on the run's loop, or sooner when
``MAX_ROWS`` wait), and at the end. With ``--workers N`` every worker appends to the
same file, opened ``O_APPEND``: on a local Linux file system each ``write`` to a regular
file holds the inode lock for its whole length, so whole-line writes from several
processes never interleave (not so on NFS). A line the kernel did not finish (the
process killed mid-write) is skipped by the reader and counted in the report's note.

Nothing secret is written: scenario labels and status keys are the harness's own words,
examples are masked by the judge and scrubbed again here, URLs lose their user info.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from harness import __version__
from harness.errors import HarnessInputError
from harness.judge import RunObserver
from harness.latency import LatencyBuffer
from harness.masking import scrub
from harness.report import build_report
from harness.results import RunResults

JOURNAL_VERSION = 1
FLUSH_S = 0.1  # lines wait at most this long in memory (a SIGKILL loses at most this much)
MAX_ROWS = 8192  # ...or until this many claims wait, whichever comes first
MAX_HEADER_BYTES = 1 << 20  # a first line longer than this is not a journal's
_US = 1_000_000


def safe_url(url: str | None) -> str | None:
    """A URL without user info, query or fragment: a journal names a target, never a login."""
    if not url or url == "embedded":
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrubbed(value: Any) -> Any:
    """Every string inside ``value`` masked (examples: IDs, nonces, HMACs, tokens)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def finish_summary(results: RunResults) -> dict[str, Any]:
    """The finish line's results: ``to_dict()`` with every check example scrubbed again
    (only the examples: scrubbing the encoded histograms would corrupt them)."""
    data = results.to_dict()
    for check in data["checks"]:
        check["examples"] = [_scrubbed(e) for e in check.get("examples", [])]
    return data


class ClaimJournal(RunObserver):
    """The journal writer, an observer of one run (or of one worker of it).

    ``header`` given: this journal owns the file (truncates it, writes the start line at
    ``on_start`` and, with ``finish``, the finish line at ``on_finish``). ``header`` None:
    a worker's journal, which only appends its claim and violation lines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: Mapping[str, Any] | None = None,
        worker: int = 0,
        finish: bool = True,
    ) -> None:
        self.path = str(path)
        self.header = dict(header) if header is not None else None
        self.worker = worker
        self.finish = finish and header is not None
        self._fd: int | None = None
        self._rows: list[tuple[str, str, float, float | None, float]] = []
        self._lines: list[str] = []  # violation lines, formatted when they happen (rare)
        self._t0 = 0.0
        self._clock = time.monotonic
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mids: dict[tuple[str, str], str] = {}  # (label, status key) -> line middle
        self._prefix = f'{{"kind":"claim","worker":{worker},"t_ms":'
        self.failed: str | None = None  # why the journal stopped (a write failed)

    # --- observer hooks --------------------------------------------------------------
    def on_start(self, info: dict[str, Any]) -> None:
        """Open the file (and write the start line) before the first claim."""
        self._t0 = self._clock()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if self.header is not None:
            flags |= os.O_TRUNC  # one journal per run: an old run's lines are not this one's
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            self._stop(exc)
            return
        atexit.register(self.flush)  # an interrupted run still leaves what it buffered
        if self.header is not None:
            start = dict(self.header)
            if "model" in info:  # the runner's own description (one process): exactly it
                start["run"] = {**start.get("run", {}), **_run_info(info)}
            self._write(json.dumps(start, separators=(",", ":"), default=str) + "\n")
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # a workers' parent: no loop and no claims of its own
            self._loop = None
        if self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_S, self._tick)

    def on_claim(
        self,
        scenario: str,
        status: str,
        latency_s: float,
        scheduled_latency_s: float | None = None,
    ) -> None:
        """Hot path: one tuple appended; formatting waits for the flush."""
        rows = self._rows
        rows.append((scenario, status, latency_s, scheduled_latency_s, self._clock()))
        if len(rows) >= MAX_ROWS:
            self.flush()

    def on_violation(self, check: str, example: Mapping[str, Any] | None = None) -> None:
        """One line per violation; an example, when the judge gives one, is scrubbed."""
        line: dict[str, Any] = {
            "kind": "violation",
            "worker": self.worker,
            "t_ms": round((self._clock() - self._t0) * 1000),
            "check": check,
        }
        if example is not None:
            line["example"] = _scrubbed(example)
        self._lines.append(json.dumps(line, separators=(",", ":"), default=str) + "\n")

    def on_finish(self, results: RunResults) -> None:
        """Everything buffered written, then (when this journal owns the file) the finish
        line; the file is closed."""
        self.flush()
        if self.finish and self._fd is not None:
            line = {
                "kind": "finish",
                "worker": self.worker,
                "t_ms": round((self._clock() - self._t0) * 1000),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "results": finish_summary(results),
            }
            self._write(json.dumps(line, separators=(",", ":")) + "\n")
        self.close()

    # --- writing ---------------------------------------------------------------------
    def _tick(self) -> None:
        self.flush()
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_later(FLUSH_S, self._tick)

    def flush(self) -> None:
        """The buffered lines, formatted and written in one ``os.write``."""
        rows, lines = self._rows, self._lines
        if not rows and not lines:
            return
        self._rows, self._lines = [], []
        if self._fd is None:
            return
        mids = self._mids
        pre, t0 = self._prefix, self._t0
        parts: list[str] = []
        add = parts.append
        for scenario, status, lat, sched, at in rows:
            mid = mids.get((scenario, status)) or self._mid(scenario, status)
            # Integers only: formatting a float costs a quarter of the whole line.
            if sched is None:
                add(f"{pre}{round((at - t0) * 1000)}{mid}{round(lat * _US)}}}\n")
            else:
                add(f'{pre}{round((at - t0) * 1000)}{mid}{round(lat * _US)},"sched_us":'
                    f"{round(sched * _US)}}}\n")  # fmt: skip
        parts.extend(lines)
        self._write("".join(parts))

    def _mid(self, scenario: str, status: str) -> str:
        """The middle of a claim line for one (label, status key) pair, made once: there are
        a few dozen pairs (labels are the harness's own words, scrubbed all the same)."""
        s, k = json.dumps(scrub(str(scenario))), json.dumps(scrub(str(status)))
        out = self._mids[(scenario, status)] = f',"scenario":{s},"status":{k},"latency_us":'
        return out

    def _write(self, text: str) -> None:
        """One ``os.write`` of whole lines (more only if the kernel writes less)."""
        fd = self._fd
        if fd is None:
            return
        data = memoryview(text.encode("utf-8"))
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except OSError as exc:
            self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        """A journal that cannot be written stops, with one line: the run and its report go
        on (a rebuild from what was written is then marked partial)."""
        self.failed = f"{self.path}: {exc.strerror or exc}"
        print(f"harness: journal stopped: {self.failed}", file=sys.stderr, flush=True)
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):  # nothing left to lose: the lines are out
                os.close(fd)
        atexit.unregister(self.flush)


def _run_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A run description for the journal: URLs without user info."""
    out = dict(info)
    for key in ("target", "url"):
        if isinstance(out.get(key), str):
            out[key] = safe_url(out[key])
    return out


def journal_for(
    options: Any, fleet: Any, workers: int = 1, thresholds: Iterable[str] = ()
) -> ClaimJournal:
    """The journal that owns a run's file (``run_job``): its start line says what runs, as
    the runner would describe it (``harness.run.runner``), so a rebuild reads like the run.
    ``options``: the job's settled ``SoakOptions`` (run ID given, concurrency capped)."""
    from harness.run.options import DEFAULT_CLAIMS, server_profile  # harness.run imports us
    from harness.shard import Shard, shard_indices

    profile = server_profile(options, fleet)
    claims = options.claims
    if claims is None and options.duration is None and fleet is not None:
        claims = DEFAULT_CLAIMS  # as the runner plans it
    total = len(fleet) if fleet is not None else 0
    shard = Shard(*options.shard) if options.shard is not None else Shard()
    settings = {
        "claims": options.claims,
        "duration": options.duration,
        "rate": options.rate,
        "concurrency": options.concurrency,
        "keepalive": options.keepalive,
        "timeout": options.timeout,
        "shard": str(shard) if options.shard else None,
        "claim_path": options.claim_path,
        "token_verify_every": options.token_verify_every,
        "max_connections": options.max_connections,
        "firmware_time_scale": options.firmware_time_scale,
    }
    run = {
        "run_id": options.run_id,
        "fleet": fleet.name if fleet is not None else None,
        "fleet_source": getattr(fleet, "source", None),
        "seed": fleet.seed if fleet is not None else None,
        "devices": len(shard_indices(total, shard)) if fleet is not None else None,
        "fleet_devices": total,
        "target": options.target or "embedded",
        "claim_path": options.claim_path,
        "flags": profile.flags.to_env(),
        "profile": profile.to_dict(),
        "atomic_idempotency": profile.atomic_idempotency,
        "model": "open" if options.rate is not None else "closed",
        "rate": options.rate,
        "concurrency": options.concurrency,
        "claims_planned": claims,
        "duration_planned_s": options.duration,
        "connection": "keepalive" if options.keepalive else "fresh",
        "shard": settings["shard"],
        "token_verify_every": options.token_verify_every,
        "workers": workers,
    }
    header = start_header(
        run_id=options.run_id,
        fleet=fleet,
        profile=profile,
        target=options.target,
        workers=workers,
        options=settings,
        run=run,
        thresholds=thresholds,
    )
    return ClaimJournal(options.journal, header, worker=0)


def start_header(
    *,
    run_id: str,
    fleet: Any,
    profile: Any,
    target: str | None,
    workers: int,
    options: Mapping[str, Any],
    run: Mapping[str, Any],
    thresholds: Iterable[str] = (),
) -> dict[str, Any]:
    """The start line: who ran what against what, and the run's description."""
    return {
        "kind": "start",
        "journal_version": JOURNAL_VERSION,
        "run_id": run_id,
        "fleet": fleet.name if fleet is not None else None,
        "seed": fleet.seed if fleet is not None else None,
        "devices": len(fleet) if fleet is not None else None,
        "profile": profile.to_dict(),
        "flags": profile.flags.to_env(),
        "target": safe_url(target) if target else "embedded",
        "workers": workers,
        "options": dict(options),
        "thresholds": list(thresholds),
        "harness_version": __version__,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": _run_info(run),
    }


# --- reading a journal back -----------------------------------------------------------


@dataclass(slots=True)
class JournalRun:
    """A journal read back: its start line, the claims replayed, and what was off."""

    path: str
    header: dict[str, Any]
    results: RunResults = field(default_factory=RunResults)
    finish: dict[str, Any] | None = None  # the finish line's results (None: not finished)
    claim_lines: int = 0
    violation_lines: int = 0
    unreadable: int = 0  # lines skipped: not JSON, or not a journal record
    truncated_last: bool = False  # the last line was cut off (killed mid-write)
    last_t: float = 0.0
    workers_seen: set[int] = field(default_factory=set)


def _bad(where: str, reason: str) -> HarnessInputError:
    return HarnessInputError("journal", reason, where)


def read_journal(path: str | os.PathLike[str]) -> JournalRun:
    """Read and replay a journal: every whole claim line counted once into ``RunResults``
    (as the judge counts a claim: the same counters, latencies bucketed by
    ``LatencyBuffer``, exactly what recording each one would give); anything that is not a
    claim journal is one ``HarnessInputError`` (exit 2)."""
    where = str(path)
    try:
        with Path(path).open("rb") as f:
            return _read(f, where)
    except OSError as exc:  # missing, unreadable, a directory, an I/O error mid-read
        raise _bad(where, f"cannot read: {exc.strerror or exc}") from None


def _read(f: IO[bytes], where: str) -> JournalRun:
    """The start line checked, then every other line replayed."""
    first = f.readline(MAX_HEADER_BYTES)
    if not first:
        raise _bad(where, "empty file, not a claim journal")
    try:
        header = orjson.loads(first)
    except orjson.JSONDecodeError:
        header = None
    if (
        not isinstance(header, dict)
        or header.get("kind") != "start"
        or "journal_version" not in header
    ):
        raise _bad(where, "not a claim journal (its first line is not a journal start line)")
    version = header.get("journal_version")
    if version != JOURNAL_VERSION:
        raise _bad(where, f"journal_version {version!r}: this harness reads {JOURNAL_VERSION}")
    run = JournalRun(where, header)
    _replay(f, run)
    return run


def _replay(lines: Iterable[bytes], run: JournalRun) -> None:
    results = run.results
    by_status, by_scenario = results.by_status, results.by_scenario
    latency, scheduled = LatencyBuffer(), LatencyBuffer()
    loads = orjson.loads
    last_bad = False
    number = 1
    for raw in lines:
        number += 1
        last_bad = False
        try:
            rec = loads(raw)
            kind = rec["kind"]
            if kind == "claim":
                scenario, status = rec["scenario"], rec["status"]
                lat = rec["latency_us"]
                sched = rec.get("sched_us", lat)
                worker = rec.get("worker", 0)
                t = rec["t_ms"] / 1000
                if not (type(scenario) is str and type(status) is str):
                    raise TypeError("scenario and status are strings")
                if not (type(lat) is int and type(sched) is int and type(worker) is int):
                    raise TypeError("latencies and worker are integers")
                # Whole lines only, then RunResults.record_claim the judge's way
                # (Judge.account: latencies through LatencyBuffer, exactly equal).
                results.sent += 1
                by_status[status] += 1
                by_scenario[(scenario, status)] += 1
                latency.add(lat / _US)
                scheduled.add(sched / _US)
                run.claim_lines += 1
                run.workers_seen.add(worker)
                if t > run.last_t:
                    run.last_t = t
            elif kind == "violation":
                example = rec.get("example")
                results.check(str(rec["check"])).record(
                    False, example if isinstance(example, dict) else None
                )
                run.violation_lines += 1
            elif kind == "finish":
                data = rec["results"]
                if not isinstance(data, dict):
                    raise TypeError("results must be an object")
                run.finish = data
            elif kind == "start":
                raise _bad(run.path, f"line {number}: a second start line; one journal, one run")
            else:
                raise TypeError(f"unknown kind {kind!r}")
        except HarnessInputError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError):
            run.unreadable += 1
            last_bad = not raw.endswith(b"\n")
    if last_bad:  # the cut-off last line: counted apart from the others
        run.unreadable -= 1
        run.truncated_last = True
    latency.flush_into(results.latency)
    scheduled.flush_into(results.latency_scheduled)


# --- the report ---------------------------------------------------------------------------


@dataclass(slots=True)
class JournalOutcome:
    """A ``RunOutcome`` (``harness.report``) rebuilt from a journal."""

    results: RunResults
    info: dict[str, Any]


def _disagreements(replayed: RunResults, final: RunResults) -> list[str]:
    """Where the claim and violation lines do not add up to the finish line's figures."""
    out = []
    if replayed.sent != final.sent:
        out.append(f"claims.sent {replayed.sent} in the lines, {final.sent} at finish")
    if Counter(replayed.by_status) != Counter(final.by_status):
        out.append("claims.by_status")
    if Counter(replayed.by_scenario) != Counter(final.by_scenario):
        out.append("claims.by_scenario")
    names = set(replayed.checks) | set(final.checks)
    for name in sorted(names):
        a = replayed.checks[name].violations if name in replayed.checks else 0
        b = final.checks[name].violations if name in final.checks else 0
        if a != b:
            out.append(f"{name} violations {a} in the lines, {b} at finish")
    return out


def rebuild(run: JournalRun) -> tuple[JournalOutcome, str | None, dict[str, Any]]:
    """The outcome a journal gives, why it is partial (None: it is not), and the report's
    ``journal`` block.

    Claims, latencies and violations always come from the lines. A finished journal whose
    lines agree with its finish line also takes from it what no line carries (each check's
    evaluations and examples, token checks, late starts, per-cohort counts, duration);
    otherwise the run is partial: what the lines say, and the passes unknown.
    """
    results = run.results
    header = run.header
    described = header.get("run")
    info = dict(described) if isinstance(described, dict) else {}
    for key in ("run_id", "fleet", "seed", "profile", "flags", "target", "workers"):
        if header.get(key) is not None:
            info.setdefault(key, header[key])
    for key in ("flags", "profile"):  # the report reads into them
        if not isinstance(info.get(key), dict):
            info[key] = {}
    skipped = []
    if run.truncated_last:
        skipped.append("its last line was cut off (killed mid-write) and was skipped")
    if run.unreadable:
        skipped.append(f"{run.unreadable} unreadable line(s) were skipped")
    partial: str | None = None
    final = None
    if run.finish is not None:
        try:
            final = RunResults.from_dict(run.finish)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            skipped.append(f"its finish line is unreadable ({type(exc).__name__})")
    if final is not None:
        off = _disagreements(results, final)
        if off:
            partial = (
                "the journal's lines do not add up to its finish line ("
                + "; ".join(off)
                + "): lines were lost, so the report is rebuilt from the lines alone"
            )
        else:
            results.checks = final.checks  # same violations, plus the passes and examples
            results.late_starts = final.late_starts
            results.duration_s = final.duration_s
            results.extra = final.extra
            results.by_cohort = final.by_cohort
            results.tokens_checked = final.tokens_checked
            results.token_signatures_verified = final.token_signatures_verified
            results.tokens_cross_checked = final.tokens_cross_checked
    else:
        partial = (
            "the run did not finish (no finish line): this report was rebuilt from its "
            f"journal's {run.claim_lines} claim line(s), and a partial run never passes"
        )
    if partial is not None:
        results.duration_s = run.last_t
        if skipped:
            partial += "; " + "; ".join(skipped)
        partial += "; checks count their violations only (passes are not journalled)"
    block = {
        "path": run.path,
        "finished": partial is None,
        "started_at": header.get("started_at"),
        "harness_version": header.get("harness_version"),
        "claim_lines": run.claim_lines,
        "violation_lines": run.violation_lines,
        "unreadable_lines": run.unreadable,
        "truncated_last_line": run.truncated_last,
        "workers_seen": sorted(run.workers_seen),
    }
    return JournalOutcome(results, info), partial, block


def report_from_journal(
    path: str | os.PathLike[str], thresholds: Iterable[str] | None = None
) -> dict[str, Any]:
    """The run's report rebuilt from its journal (``build_report``'s structure).

    ``thresholds`` None: the run's own (the start line's); a partial run's report is
    marked ``"partial": true`` and never passes.
    """
    from harness.thresholds import evaluate, parse_thresholds

    gates = None if thresholds is None else parse_thresholds(thresholds)  # before any read
    run = read_journal(path)
    if gates is None:
        own = run.header.get("thresholds")
        gates = parse_thresholds([str(e) for e in own] if isinstance(own, list) else [])
    outcome, partial, block = rebuild(run)
    report = build_report(outcome, evaluate(gates, outcome.results), partial=partial)
    report["journal"] = block
    return report
