"""Writing the claim journal: ``ClaimJournal``, the observer a run appends its lines with
(the format is in ``harness.journal``)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness import __version__
from harness.judge import RunObserver
from harness.masking import scrub
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
