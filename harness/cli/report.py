"""``harness report merge``: combine shard reports exactly and gate the merged result;
``harness report from-journal``: a killed run's report, rebuilt from its claim journal.

Shards (``--shard I/N``, Kubernetes Indexed Job pods, ``--workers`` processes)
each write a report. Merging rebuilds each one's ``RunResults`` (counts plus
the encoded HDR histograms) and adds them, so the merged p99 is the p99 of all
claims, never an average of per-shard p99s. Thresholds are applied to the merged
result only: a gate such as ``p99<0.5`` means the whole fleet's p99.

``from-journal`` replays a ``soak --journal`` file (``harness.journal``): claims,
latencies (the histograms rebuilt from each claim's latency) and violations from its
lines. A journal without its finish line is a run that did not finish: the report is
marked ``partial`` and never passes. A merge with a partial report in it is partial too.

Exit codes: 0 every check and threshold passed, 1 one failed, 2 bad input.
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from harness.cli.option_group import html_option
from harness.errors import HarnessInputError
from harness.exporters import Exporters
from harness.report import fit, nothing_judged
from harness.results import RunResults
from harness.shard import Shard
from harness.thresholds import evaluate, parse_thresholds

# Run metadata every merged report must agree on (else the merge is not one run's
# numbers): exit 2 naming the field. The merged report keeps them.
MUST_AGREE = ("report_version", "fleet", "seed", "flags", "profile", "target", "run_id")


def _meta(report: dict[str, Any], key: str) -> Any:
    """A report's run metadata: top level, else under ``run`` (where soak keeps it)."""
    if key in report:
        return report[key]
    run = report.get("run")
    return run.get(key) if isinstance(run, dict) else None


def _check_same_run(loaded: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Every ``MUST_AGREE`` field equal in all reports; returns those values."""
    first_path, first = loaded[0]
    agreed = {}
    for key in MUST_AGREE:
        want = _meta(first, key)
        for path, data in loaded[1:]:
            got = _meta(data, key)
            if got != want:
                raise HarnessInputError(
                    key,
                    f"{_show(got)} here but {_show(want)} in {first_path}: these reports are "
                    "not shards of one run, so a merge would not be exact",
                    path,
                )
        agreed[key] = want
    return agreed


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if value is not None else "missing"
    return text if len(text) <= 80 else text[:77] + "..."


def _shard_of(report: dict[str, Any], where: str) -> tuple[int, int] | None:
    """A report's ``shard`` (``"I/N"`` or ``{"index", "count"}``), when it names one."""
    raw = report.get("shard")
    run = report.get("run")
    if raw is None and isinstance(run, dict):
        raw = run.get("shard")  # where ``harness soak`` reports put it
    if raw is None:
        return None
    if isinstance(raw, dict):
        try:
            index, count = int(raw["index"]), int(raw["count"])
        except (KeyError, TypeError, ValueError):
            raise HarnessInputError(
                "shard", f"expected I/N or {{index, count}}, got {raw!r}", where
            ) from None
        try:
            shard = Shard(index, count)
        except HarnessInputError as exc:
            raise HarnessInputError("shard", exc.reason, where) from None
    elif isinstance(raw, str):
        try:
            shard = Shard.parse(raw, "shard")
        except HarnessInputError as exc:
            raise HarnessInputError(exc.field, exc.reason, where) from None
    else:
        raise HarnessInputError("shard", f"expected I/N, got {raw!r}", where)
    return shard.index, shard.count


def load_report(path: str | os.PathLike[str]) -> tuple[dict[str, Any], RunResults]:
    """One report file: its JSON and its results rebuilt exactly; bad files name file and key."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessInputError("report", f"cannot read: {exc.strerror or exc}", where) from None
    except UnicodeDecodeError:
        raise HarnessInputError("report", "not UTF-8 text", where) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessInputError(
            "report", f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", where
        ) from None
    if not isinstance(data, dict):
        raise HarnessInputError("report", "top level must be a JSON object", where)
    claims = data.get("claims")
    if not isinstance(claims, dict):
        raise HarnessInputError("claims", "missing or not an object (not a run report?)", where)
    for key in ("sent", "by_status"):
        if key not in claims:
            raise HarnessInputError(f"claims.{key}", "missing", where)
    if not isinstance(data.get("histograms", {}), dict):
        raise HarnessInputError("histograms", "must be an object", where)
    if not isinstance(data.get("checks", []), list):
        raise HarnessInputError("checks", "must be a list", where)
    try:
        results = RunResults.from_dict(data)
    except (binascii.Error, ValueError) as exc:
        raise HarnessInputError("histograms", f"cannot decode: {exc}", where) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarnessInputError(
            "report", f"malformed ({type(exc).__name__}: {exc})", where
        ) from None
    counted = sum(results.by_status.values())
    if counted != results.sent:
        raise HarnessInputError(
            "claims.by_status", f"adds up to {counted}, but claims.sent is {results.sent}", where
        )
    return data, results


def merge_reports(
    paths: Sequence[str | os.PathLike[str]],
    thresholds: Sequence[str] = (),
    allow_partial: bool = False,
) -> dict[str, Any]:
    """The merged report for ``paths``, with ``thresholds`` evaluated on the merged results.

    When the reports name their shard, a shard given twice is an error (it would
    count twice), and so is a missing one unless ``allow_partial``.
    """
    if not paths:
        raise HarnessInputError("reports", "give at least one report file")
    gates = parse_thresholds(thresholds)  # bad expressions fail before any file is read
    merged = RunResults()
    loaded: list[dict[str, Any]] = []
    shards: dict[tuple[int, int], str] = {}
    files = [(str(path), *load_report(path)) for path in paths]
    agreed = _check_same_run([(path, data) for path, data, _ in files])
    for path, data, results in files:
        shard = _shard_of(data, str(path))
        if shard is not None:
            if shard in shards:
                raise HarnessInputError(
                    "shard",
                    f"{shard[0]}/{shard[1]} also in {shards[shard]}; it would be counted twice",
                    str(path),
                )
            shards[shard] = str(path)
        merged.merge(results)
        loaded.append(data)
    _check_shard_set(shards, len(paths), allow_partial)
    outcome = evaluate(gates, merged)
    report = merged.to_dict()
    checks_passed = bool(report["passed"])
    note = nothing_judged(merged)
    if note is not None:  # the merged run judged nothing: not a pass (as for one run)
        checks_passed = False
        report["verdict_note"] = note
    report.update((k, v) for k, v in agreed.items() if v is not None)
    tokens = report["token_checks"]  # every figure merged with the results, once
    checked, verified = tokens["tokens_checked"], tokens["signatures_verified"]
    tokens["signature_sampling_rate"] = verified / checked if checked else None
    tokens["pyjwt_every"] = (loaded[0].get("token_checks") or {}).get("pyjwt_every")
    by_status = report["claims"]["by_status"]
    report["outcomes"] = {
        "rate_limited": by_status.get("429", 0),
        "timeout": by_status.get("timeout", 0),
        "connection_error": by_status.get("connection_error", 0),
    }
    report["merged_from"] = [str(p) for p in paths]
    report["shards"] = sorted(f"{i}/{n}" for i, n in shards)
    report["thresholds"] = [r.to_dict() for r in outcome]
    report["checks_passed"] = checks_passed
    report["passed"] = checks_passed and all(r.passed for r in outcome)
    partial = [str(p) for p, data, _ in files if data.get("partial")]
    if partial:  # a part of a run stays a part when merged: never a pass
        report["partial"] = True
        report["passed"] = False
        why = f"merged from partial report(s) {', '.join(partial)}: their runs did not finish"
        note = report.get("verdict_note")
        report["verdict_note"] = f"{why}; {note}" if note else why
    return report


def _check_shard_set(shards: dict[tuple[int, int], str], n_files: int, allow_partial: bool) -> None:
    if not shards:
        return
    counts = {n for _, n in shards}
    if len(counts) > 1:
        raise HarnessInputError(
            "shard", f"reports come from different splits: N in {sorted(counts)}"
        )
    if len(shards) != n_files:
        raise HarnessInputError("shard", "some reports name their shard and some do not")
    (count,) = counts
    missing = sorted(set(range(count)) - {i for i, _ in shards})
    if missing and not allow_partial:
        names = ", ".join(f"{i}/{count}" for i in missing)
        raise HarnessInputError(
            "shard", f"missing {names}; the merge would not be the whole fleet (--allow-partial)"
        )


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few console lines: what was merged, counts, latency, every gate."""
    claims = report["claims"]
    lat = report["latency_seconds"]
    statuses = " ".join(f"{k}={v}" for k, v in claims["by_status"].items()) or "-"
    lines = [
        f"merged {len(report['merged_from'])} report(s)"
        + (f" (shards {', '.join(report['shards'])})" if report["shards"] else ""),
        f"claims sent {claims['sent']}  {statuses}  error_rate {claims['error_rate']:.4f}",
        "latency p50 {:.4f}s p95 {:.4f}s p99 {:.4f}s max {:.4f}s".format(
            lat["p50"], lat["p95"], lat["p99"], lat["max"]
        ),
    ]
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    lines.append("checks: all passed" if not failed else f"checks failed: {', '.join(failed)}")
    for th in report["thresholds"]:
        mark = "PASS" if th["passed"] else "FAIL"
        seen = "n/a" if th["observed"] is None else f"{th['observed']:.6g}"
        note = f" ({th['note']})" if th["note"] else ""
        lines.append(f"threshold {th['name']}: {mark}, observed {seen}{note}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return lines


@click.group()
def report() -> None:
    """Work with run reports."""


@report.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="EXPR",
    help="Gate on the merged result, e.g. p99<0.5, error_rate<0.01 (repeatable).",
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write merged JSON.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML.")
@html_option()
@click.option(
    "--allow-partial", is_flag=True, help="Merge even when some shards' reports are missing."
)
def merge(
    reports: tuple[str, ...],
    thresholds: tuple[str, ...],
    report_path: str | None,
    junit_path: str | None,
    html_path: str | None,
    allow_partial: bool,
) -> int:
    """Merge shard reports exactly (histograms added) and apply thresholds to the result.

    Exit 0 when every check and threshold passes, 1 when one fails, 2 on bad input.
    """
    exporters = Exporters(report_path, junit_path, quiet=True, html=html_path)  # own summary
    exporters.check()
    merged = merge_reports(reports, thresholds, allow_partial)
    exporters.write(merged)
    for line in fit(summary_lines(merged)):
        click.echo(line)
    return 0 if merged["passed"] else 1


@report.command("from-journal")
@click.argument("journal", type=click.Path(dir_okay=False))
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="EXPR",
    help="Gate on the rebuilt result (repeatable; default: the run's own --threshold list).",
)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write JSON.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write JUnit XML.")
def from_journal(
    journal: str, thresholds: tuple[str, ...], report_path: str | None, junit_path: str | None
) -> int:
    """Rebuild a run's report from its claim journal (harness soak --journal FILE).

    A journal without a finish line (the run was killed) gives a report marked
    partial, which never passes. Exit 0 when every check and threshold passes, 1 when
    one fails or the run did not finish, 2 on bad input (not a journal).
    """
    from harness.journal import report_from_journal

    exporters = Exporters(report_path, junit_path)  # the summary table on stdout
    exporters.check()
    rebuilt = report_from_journal(journal, list(thresholds) if thresholds else None)
    exporters.write(rebuilt)
    return 0 if rebuilt["passed"] else 1
