"""The soak report: one JSON document (CI reads ``passed``), and the console summary table.

The data part is ``RunResults.to_dict()`` unchanged, so ``harness report merge``
rebuilds exact results from shard reports (``RunResults.from_dict``); this
module adds the run's metadata, the thresholds and the verdict. Nothing here
carries a secret: check examples mask device IDs, and tokens, nonces and HMACs
never reach a report.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessInputError
from harness.faults.phases import CHECK_NOTES
from harness.masking import scrub
from harness.metrics import check_gateway, textfile_dir
from harness.results import CONNECTION_ERROR, TIMEOUT, RunResults

REPORT_VERSION = 1
WIDTH = 100  # the console summary fits this many columns (a CI log, a split terminal)
OVERRUN_S = 1.0  # a run this much past its --duration says so in the summary
RACE_NOTE = (
    "known v5 race: steps 3 and 8 are not atomic, so identical requests in flight "
    "together get different tokens (CONTRACT.md section 2); the server's atomic "
    "idempotency switch fixes it"
)


def nothing_judged(results: RunResults) -> str | None:
    """Why a run judged nothing (then it cannot pass), or None.

    No answer at all, or only 429s: a rate-limited claim is an outcome, not a
    verdict, so a run the server only told to back off has checked nothing. Sessions
    asked for and none online: the MQTT side checked nothing (in any worker or shard:
    this is asked of the merged results too).
    """
    answered = results.sent - results.by_status.get(TIMEOUT, 0)
    answered -= results.by_status.get(CONNECTION_ERROR, 0)
    if answered <= 0:
        return "no claim got an HTTP answer, so nothing could be checked"
    if answered == results.by_status.get("429", 0):
        return "every answer was 429 (rate limited), so nothing could be checked"
    online = results.checks.get("mqtt_connect")
    if results.mqtt is not None and (online is None or online.evaluated == 0):
        return "MQTT sessions were asked for but no device went online, so none were checked"
    return None


class RunOutcome(Protocol):
    """What a report is built from (``harness.run.SoakOutcome``): the results and the run."""

    results: RunResults
    info: dict[str, Any]


def build_report(
    outcome: RunOutcome,
    thresholds: Iterable[Any] = (),
    server_counters: Mapping[str, Any] | None = None,
    partial: str | None = None,
) -> dict[str, Any]:
    """The report dict for a run's outcome (``results`` and ``info``; thresholds:
    ``ThresholdResult`` or dicts). ``partial``: why the outcome is not a whole run's (a
    killed run rebuilt from its journal): the report says so and never passes."""
    results = outcome.results
    info = dict(outcome.info)
    data = results.to_dict()
    th = [t.to_dict() if hasattr(t, "to_dict") else dict(t) for t in thresholds]
    checks_passed = bool(data["passed"])
    verdict_note = nothing_judged(results)
    if verdict_note is not None:  # nothing was judged: that is not a pass
        checks_passed = False
    thresholds_passed = all(bool(t["passed"]) for t in th)
    flags = info.get("flags", {})
    if flags.get("ENABLE_IDEMPOTENCY") in (True, "true") and not info.get("atomic_idempotency"):
        for check in data["checks"]:
            if check["name"] == "concurrent_retry" and not check["passed"]:
                examples = check.get("examples") or []
                if examples and all("different tokens" in str(e.get("got")) for e in examples):
                    check["note"] = RACE_NOTE  # only when what failed is the race itself
    for check in data["checks"]:  # a fault check that failed says why the build does that
        if not check["passed"] and check["name"] in CHECK_NOTES:
            check["note"] = CHECK_NOTES[check["name"]]
    tokens = results.tokens_checked
    verified = results.token_signatures_verified
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "passed": checks_passed and thresholds_passed,
        "checks_passed": checks_passed,
        "thresholds_passed": thresholds_passed,
        "run_id": info.get("run_id"),
        "fleet": info.get("fleet"),
        "seed": info.get("seed"),
        "profile": info.get("profile"),
        "target": info.get("target"),
        "flags": {k: v == "true" if isinstance(v, str) else bool(v) for k, v in flags.items()},
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": info,
        **data,
        "thresholds": th,
        "token_checks": {
            "tokens_checked": tokens,
            "signatures_verified": verified,
            "signature_sampling_rate": (verified / tokens) if tokens else None,
            "pyjwt_cross_checked": results.tokens_cross_checked,
            "pyjwt_every": info.get("token_verify_every"),
        },
        "outcomes": {
            "rate_limited": results.by_status.get("429", 0),
            TIMEOUT: results.by_status.get(TIMEOUT, 0),
            CONNECTION_ERROR: results.by_status.get(CONNECTION_ERROR, 0),
        },
    }
    report["passed"] = checks_passed and thresholds_passed  # data's own "passed" is checks only
    if partial:  # part of a run: whatever its checks say, the run as a whole was not seen
        report["partial"] = True
        report["passed"] = False
        verdict_note = f"{partial}; {verdict_note}" if verdict_note else partial
    if verdict_note:
        report["verdict_note"] = verdict_note
    if server_counters is not None:
        report["server_counters"] = dict(server_counters)
    return report


def check_writable(option: str, path: str | os.PathLike[str]) -> None:
    """Before a run, not after it: an output the run could not write is exit 2 up front,
    instead of a finished run whose results are lost."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise HarnessInputError(option, f"{path} is a directory")
    if not parent.is_dir():
        raise HarnessInputError(option, f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise HarnessInputError(option, f"cannot write {path}: permission denied")


def check_outputs(
    report: str | None = None,
    junit: str | None = None,
    textfile: str | None = None,
    pushgateway: str | None = None,
    html: str | None = None,
) -> None:
    """Every output a run will write, checked before the run (one line, exit 2) so that
    a finished run's results are never lost to a typo."""
    for option, path in (("--report", report), ("--junit", junit), ("--html", html)):
        if path:
            check_writable(option, path)
    if textfile or pushgateway:
        if textfile:
            textfile_dir(textfile)
        if pushgateway:
            check_gateway(pushgateway)


def write_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the JSON report atomically (a CI collector never reads half a file)."""
    text = json.dumps(report, indent=1, sort_keys=False) + "\n"
    return write_atomic("--report", path, text.encode("utf-8"))


def write_atomic(option: str, path: str | os.PathLike[str], data: bytes) -> Path:
    """Every file a run writes, written whole or not at all (a temporary file beside it,
    then a rename); a path that cannot be written is an ``option`` error, exit 2."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HarnessInputError(option, f"cannot write {path}: {exc.strerror or exc}") from None
    return target


def summary_table(report: Mapping[str, Any]) -> str:
    """The end-of-run table: a bench's boards, statuses, latency percentiles, checks and
    thresholds."""
    lines: list[str] = []
    if report.get("boards"):
        lines.extend(boards_table(report).splitlines())
    run = report.get("run", {})
    claims = report["claims"]
    lines.append(
        f"run {report.get('run_id')}  fleet {report.get('fleet')}  target {report.get('target')}"
        f"  ({run.get('model', '?')} model, {run.get('connection', '?')} connections)"
    )
    flags_on = [k for k, v in report.get("flags", {}).items() if v]
    lines.append(f"flags declared on: {', '.join(flags_on) or 'none'}")
    lines.append(
        f"claims sent {claims['sent']} in {report.get('duration_s', 0.0):.1f} s "
        f"({claims.get('per_second', 0.0):,.0f}/s), late starts {claims.get('late_starts', 0)}"
    )
    profile = report.get("profile") or {}
    if profile:
        lines.append(
            f"server profile {profile.get('name')} (ENVIRONMENT={profile.get('environment')}"
            f"{', bare router' if profile.get('bare_router') else ''}, "
            f"Redis {profile.get('redis')})"
        )
    planned, took = run.get("duration_planned_s"), float(report.get("duration_s") or 0.0)
    if planned and took > planned + OVERRUN_S:
        lines.append(
            f"OVERRAN: planned {planned:g} s, took {took:.1f} s (the last answers were "
            "waited for: the server is slower than the load)"
        )
    if run.get("concurrency_capped_from"):
        lines.append(
            f"concurrency capped at {run.get('concurrency')} "
            f"(asked {run['concurrency_capped_from']}): a device has one claim in flight"
        )
    unanswered = sum(claims["by_status"].get(k, 0) for k in (TIMEOUT, CONNECTION_ERROR))
    if unanswered:
        lines.append(
            f"UNANSWERED: {unanswered} claims got no HTTP answer; each is a violation of its check"
        )
    lines.append("")
    lines.append(f"{'status':<18}{'claims':>10}{'share':>9}")
    sent = max(claims["sent"], 1)
    for key, n in claims["by_status"].items():
        name = f"{key} rate_limited" if key == "429" else key
        lines.append(f"{name:<18}{n:>10}{n / sent:>9.1%}")
    lines.append("")
    lat, sched = report["latency_seconds"], report.get("latency_from_schedule_seconds", {})
    lines.append(f"{'latency (s)':<18}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    lines.append(_lat_row("from send", lat))
    if sched:
        lines.append(_lat_row("from schedule", sched))
    lines.append("")
    name_w = max([22, *(len(c["name"]) + 2 for c in report["checks"])])
    lines.append(f"{'check':<{name_w}}{'result':>8}{'evaluated':>11}{'violations':>12}")
    for check in report["checks"]:
        verdict = "pass" if check["passed"] else "FAIL"
        lines.append(
            f"{check['name']:<{name_w}}{verdict:>8}{check.get('evaluated', 0):>11}"
            f"{check['violations']:>12}"
        )
        if not check["passed"]:
            for ex in check.get("examples", [])[:2]:
                lines.append(
                    scrub(
                        f"    {ex.get('device_id')} [{ex.get('cohort')}/{ex.get('scenario')}] "
                        f"expected {ex.get('expected')}; got {ex.get('got')}"
                    )
                )
            if check.get("note"):
                lines.append(f"    note: {check['note']}")
    for th in report.get("thresholds", []):
        verdict = "pass" if th["passed"] else "FAIL"
        observed = th.get("observed")
        shown = "n/a" if observed is None else f"{observed:.4g}"
        lines.append(f"threshold {th['name']:<20}{verdict:>6}  observed {shown}")
    extra = report.get("extra") or {}
    if (
        extra.get("firmware_attempts")
        or extra.get("firmware_gave_up")
        or extra.get("firmware_resends")
    ):
        lines.append(
            f"device retries: {extra.get('firmware_resends', 0)} resends and "
            f"{extra.get('firmware_attempts', 0)} fresh attempts beyond the plan; "
            f"{extra.get('firmware_gave_up', 0)} times a device gave up (attempts spent)"
        )
    lines.extend(fault_line(w) for w in run.get("fault_windows") or [])
    lines.extend(outage_line(o) for o in report.get("outages") or [])
    lines.extend(mqtt_lines(report.get("mqtt")))
    tok = report.get("token_checks", {})
    if tok.get("signature_sampling_rate") is not None:
        lines.append(
            f"token signatures verified: {tok['signatures_verified']} of "
            f"{tok['tokens_checked']} ({tok['signature_sampling_rate']:.0%})"
        )
    lines.append("")
    if report.get("verdict_note"):
        lines.append(f"note: {report['verdict_note']}")
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines.append(f"{verdict} (partial run)" if report.get("partial") else verdict)
    return "\n".join(fit(lines))


def fit(lines: Iterable[str], width: int = WIDTH) -> list[str]:
    """Every line at most ``width`` columns: a longer one is wrapped at spaces, its
    continuations indented under it, so nothing is cut off (a single word longer than
    a line, such as a URL, stays whole and so stays longer)."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")) + 4)
        out.extend(
            textwrap.wrap(
                line,
                width,
                subsequent_indent=indent,
                break_on_hyphens=False,
                break_long_words=False,  # a URL or a path longer than a line stays whole
            )
        )
    return out


def mqtt_lines(m: Mapping[str, Any] | None) -> list[str]:
    """The MQTT side in three lines or so: sessions, delivery, latency, broker losses."""
    if not m:
        return []
    connacks = ", ".join(f"{k} {n}" for k, n in (m.get("connacks") or {}).items()) or "none"
    hb = m.get("heartbeat_latency_seconds") or {}
    lines = [
        f"mqtt ({m.get('broker')}): {m['sessions_connected']} devices online, "
        f"{m['sessions']} sessions; connects: {connacks}",
        f"mqtt delivery: births {m['births']}, heartbeats {m['heartbeats_sent']} acked / "
        f"{m['heartbeats_seen']} seen ({m['duplicates']} duplicates, {m['gaps']} gaps), "
        f"wills {m['wills_seen']}/{m['wills_expected']}, pings {m['pings_answered']}/"
        f"{m['pings_sent']}, isolation refused {m['isolation_refused']}/"
        f"{m['isolation_probes']}, not observable {m.get('unobserved', 0)}",
        f"mqtt heartbeat latency p50 {hb.get('p50', 0):.4f} p99 {hb.get('p99', 0):.4f} s; "
        f"token refreshes {m['refreshes']} ({m['refresh_failures']} refused)",
    ]
    if m.get("refresh_expected") == "401" and m["refreshes"]:
        lines.append(
            "mqtt NOTE: the declared v5 build refuses every genuine refresh token (its "
            "jwt.decode has no audience): devices lose the broker when their token expires"
        )
    for r in m.get("reconnects") or []:
        back = r.get("back_after_s")
        how = (
            f"all {r.get('devices')} devices back {back:.2f} s after it returned"
            if back is not None
            else f"NOT ALL BACK: {r.get('not_back')} of "
            f"{r.get('devices')} devices still offline at the end"
        )
        lines.append(f"mqtt broker loss {r.get('window')}: {how}, {r.get('connects')} connects")
    return lines


def fault_line(w: Mapping[str, Any]) -> str:
    """One declared fault window as it happened."""
    lasted = "still on at the end" if w.get("lasted_s") is None else f"lasted {w['lasted_s']:.2f} s"
    return (
        f"FAULT {w['text']}: began +{w['began_after_s']:.2f} s, {lasted}; {w['claims']} claims "
        f"judged by its rows, {w['off_row']} off them"
    )


def outage_line(o: Mapping[str, Any]) -> str:
    """One outage and its reconnect storm, as the summary says it."""
    if o.get("still_down"):
        back = "the server was still down when the run ended"
    elif o.get("recovery_s") is not None:
        back = f"every device hit was claiming again {o['recovery_s']:.2f} s after it came back"
    else:
        back = f"{o['devices_not_back']} devices hit had no answer again by the end"
    return (
        f"OUTAGE at +{o['started_after_s']:.1f} s for {o['duration_s']:.1f} s: "
        f"{o['claims_failed']} claims failed across {o['devices_hit']} devices; "
        f"{o['resends']} resends, {o['fresh_attempts']} fresh attempts, "
        f"{o['devices_gave_up']} devices gave up; {back}"
    )


def boards_table(report: Mapping[str, Any]) -> str:
    """One line per board: firmware, claims by status, bridge counters, or why it failed."""
    lines = []
    for b in report["boards"]:
        if not b["ok"]:
            lines.append(scrub(f"{b['name']:<14} FAILED  {b['error']}"))
            continue
        status = " ".join(f"{k}x{v}" for k, v in b["claims_by_status"].items()) or "-"
        flash = b.get("flash") or {}
        flashed = "" if not flash else ("  flash skipped" if flash.get("skipped") else "  flashed")
        lines.append(
            f"{b['name']:<14} fw {b['fw']:<8} {b['hmac_mode']:<10} claims {status:<18}"
            f" reconnects {b['reconnects']}  bad frames {b['bad_frames']}"
            f"  garbage bytes {b['garbage_bytes']}{flashed}"
        )
    return "\n".join(lines)


def _lat_row(name: str, s: Mapping[str, float]) -> str:
    return f"{name:<18}" + "".join(f"{s.get(k, 0.0):>9.4f}" for k in ("p50", "p95", "p99", "max"))
