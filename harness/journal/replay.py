"""Reading a claim journal back: a killed run's claims replayed into the same counts and
histograms, and its report rebuilt (``harness report from-journal``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from harness.errors import HarnessInputError
from harness.journal.writer import (
    _US,
    JOURNAL_VERSION,
    MAX_HEADER_BYTES,
)
from harness.latency import LatencyBuffer
from harness.report import build_report
from harness.results import RunResults


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
