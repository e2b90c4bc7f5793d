"""The HTML report of a run: ``soak``, ``hil run`` and ``report merge`` reports.

Verdict first (passed or failed, why, the thresholds), then the checks with
their masked examples, outcomes and latency over time with the run's fault
windows, outages and broker losses drawn on the same axis, the cohorts, the
boards of a bench, the MQTT side, and the run's metadata last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.html.page import Html, definitions, document, figure, table, text, verdict
from harness.html.svg import Band, Layer, lines, stacked_bars
from harness.masking import scrub
from harness.report import mqtt_lines

STATUS_COLOURS = {
    "200": "#2e7d32",
    "401": "#ef6c00",
    "403": "#f4511e",
    "404": "#fbc02d",
    "409": "#c2185b",
    "422": "#6d4c41",
    "429": "#78909c",
    "500": "#b71c1c",
    "502": "#d32f2f",
    "503": "#e57373",
    "timeout": "#212121",
    "connection_error": "#616161",
}
CHECK_COLOURS = ("#c62828", "#6a1b9a", "#ef6c00", "#283593", "#00838f", "#558b2f", "#4e342e")


def status_colour(key: str) -> str:
    """One colour per answer, the same on every page: 2xx green, 4xx warm, 5xx red."""
    if key in STATUS_COLOURS:
        return STATUS_COLOURS[key]
    return {"2": "#66bb6a", "4": "#ffa726", "5": "#e53935"}.get(key[:1], "#9e9e9e")


def _ordered_statuses(keys: set[str]) -> list[str]:
    """2xx at the bottom of the stack, then 4xx, 5xx, and no-answer on top."""
    return sorted(keys, key=lambda k: (not k.isdigit(), k))


def bands(report: Mapping[str, Any], zero: float) -> list[Band]:
    """Every span worth seeing on the time axis, in seconds from ``zero`` (unix time: the
    run's ``started_unix``, from which its windows' offsets count). An outage is placed
    by its wall-clock ``started_at``: merged outages' offsets count from another start."""
    run = report.get("run") or {}
    out: list[Band] = []
    for w in run.get("fault_windows") or []:
        began = float(w.get("began_after_s") or 0.0)
        lasted = w.get("lasted_s")
        end = began + float(lasted if lasted is not None else w.get("for_s") or 0.0)
        out.append(Band(began, end, scrub(f"fault {w.get('text')}"), "fault"))
    for w in (run.get("mqtt") or {}).get("windows") or []:
        at = float(w.get("at_s") or 0.0)
        label = scrub(f"broker {w.get('text')}")
        out.append(Band(at, at + float(w.get("for_s") or 0.0), label, "mqtt"))
    for o in report.get("outages") or []:
        at, lasted = _outage_at(o, zero), float(o.get("duration_s") or 0.0)
        out.append(Band(at, at + lasted, f"outage {lasted:.1f} s", "outage"))
    return out


def _outage_at(outage: Mapping[str, Any], zero: float) -> float:
    """Seconds from ``zero`` to an outage's start, by its wall clock (``started_at``)."""
    return float(outage.get("started_at") or zero) - zero


def _outage_offset(outage: Mapping[str, Any], zero: float | None) -> float:
    """As ``_outage_at``; without a series, the offset the run wrote."""
    if zero is None:
        return float(outage.get("started_after_s") or 0.0)
    return _outage_at(outage, zero)


def axis_zero(report: Mapping[str, Any]) -> float | None:
    """Unix time of the time axes' zero: the run's start, or (a merged report has none)
    its first interval's; None without a series."""
    points = (report.get("series") or {}).get("points") or []
    if not points:
        return None
    return float((report.get("run") or {}).get("started_unix") or points[0]["t"])


def charts(report: Mapping[str, Any], zero: float | None) -> list[str]:
    """Outcomes stacked per interval, violations per interval, latency percentiles;
    ``zero``: ``axis_zero``."""
    series = report.get("series") or {}
    points = series.get("points") or []
    if not points or zero is None:
        return [
            "<p class='muted'>No interval series in this report (written by an older "
            "harness, or rebuilt from a journal).</p>"
        ]
    step = float(series.get("step_s") or 1.0)
    # The first interval began on the wall clock's step, up to a step before the run.
    xs = [float(p["t"]) - zero for p in points]
    spans = bands(report, zero)
    statuses = _ordered_statuses({k for p in points for k in p.get("by_status") or {}})
    outcome_layers = [
        Layer(
            scrub(k), [int((p.get("by_status") or {}).get(k, 0)) for p in points], status_colour(k)
        )
        for k in statuses
    ]
    out = [
        "<h2>Outcomes over time</h2>",
        f"<p class='muted'>Claims per {step:g} s interval by answer; shaded: fault windows, "
        "outages and broker losses.</p>",
        stacked_bars("outcomes", "claims per interval by status", xs, step, outcome_layers, spans),
    ]
    checks = sorted({k for p in points for k in p.get("violations") or {}})
    if checks:
        layers = [
            Layer(
                scrub(c),
                [int((p.get("violations") or {}).get(c, 0)) for p in points],
                CHECK_COLOURS[i % len(CHECK_COLOURS)],
            )
            for i, c in enumerate(checks)
        ]
        out += [
            "<h2>Violations over time</h2>",
            stacked_bars(
                "violations",
                "violations per interval by check",
                xs,
                step,
                layers,
                spans,
                y_label="violations per interval",
            ),
        ]
    for key, name in (
        ("latency_seconds", "from send"),
        ("latency_from_schedule_seconds", "from schedule"),
    ):
        layers = []
        for pct, colour in (("p50", "#1e88e5"), ("p95", "#fb8c00"), ("p99", "#c62828")):
            values: list[float | None] = []
            for p in points:
                counted = sum(int(n) for n in (p.get("by_status") or {}).values())
                values.append(float(p.get(key, {}).get(pct, 0.0)) if counted else None)
            layers.append(Layer(pct, values, colour, dashed=name == "from schedule"))
        out += [
            f"<h2>Latency {name}</h2>",
            lines(
                f"latency-{name.split()[1]}",
                f"latency {name} per interval",
                xs,
                step,
                layers,
                spans,
            ),
        ]
    return out


def _verdict(report: Mapping[str, Any]) -> str:
    """The headline and every reason a run did not pass, as the JSON says them."""
    passed = bool(report.get("passed"))
    why = []
    if report.get("verdict_note"):
        why.append(str(report["verdict_note"]))
    if report.get("boards_passed") is False:  # a bench run: a board that failed fails it
        down = [b["name"] for b in report.get("boards") or [] if not b.get("ok")]
        why.append(f"boards failed: {', '.join(down) or 'see the boards table'}")
    if not int((report.get("claims") or {}).get("sent") or 0):
        why.append("no claim was sent")
    failed = [c["name"] for c in report.get("checks") or [] if not c.get("passed")]
    if failed:
        why.append(f"checks failed: {', '.join(failed)}")
    gates = [t["name"] for t in report.get("thresholds") or [] if not t.get("passed")]
    if gates:
        why.append(f"thresholds failed: {', '.join(gates)}")
    claims = report.get("claims") or {}
    head = "PASSED" if passed else "FAILED"
    if report.get("partial"):
        head += " (partial run)"
    rate = f"{float(claims.get('error_rate') or 0.0):.4f}"  # as the console shows it
    summary = Html(
        f"<p>{figure('claims-sent', int(claims.get('sent', 0)))} claims sent in "
        f"{float(report.get('duration_s') or 0):.1f} s, "
        f"{figure('checks-failed', len(failed))} checks failed of "
        f"{len(report.get('checks') or [])}, error rate "
        f"{figure('error-rate', rate)}</p>"
    )
    out = [verdict(passed, head, why), summary]
    th = report.get("thresholds") or []
    if th:
        out.append("<h2>Thresholds</h2>")
        out.append(
            table(
                ["threshold", "result", "observed", "note"],
                [
                    [
                        t["name"],
                        _pass(t["passed"]),
                        "n/a" if t.get("observed") is None else f"{t['observed']:.6g}",
                        t.get("note") or "",
                    ]
                    for t in th
                ],
                numeric=(2,),
            )
        )
    return "".join(out)


def _pass(ok: object) -> Html:
    """A pass or FAIL cell."""
    return Html('<span class="pass">pass</span>' if ok else '<span class="fail">FAIL</span>')


def _checks(report: Mapping[str, Any]) -> str:
    """Every check with its counts, up to three masked examples and the build's note."""
    rows = []
    for c in report.get("checks") or []:
        examples = c.get("examples") or []
        shown = "".join(
            f'<div class="ex">{text(ex.get("device_id"))} [{text(ex.get("cohort"))}/'
            f"{text(ex.get('scenario'))}] expected {text(ex.get('expected'))}; got "
            f"{text(ex.get('got'))}</div>"
            for ex in examples[:3]
        )
        if c.get("note"):
            shown += f'<div class="note">note: {text(c["note"])}</div>'
        rows.append(
            [
                c["name"],
                _pass(c.get("passed")),
                Html(f'<span data-check="{text(c["name"])}">{int(c.get("evaluated", 0)):,}</span>'),
                Html(f'<span data-violations="{text(c["name"])}">{int(c["violations"]):,}</span>'),
                Html(shown),
            ]
        )
    return "<h2>Checks</h2>" + table(
        ["check", "result", "evaluated", "violations", "examples (masked)"], rows, numeric=(2, 3)
    )


def _statuses(report: Mapping[str, Any]) -> str:
    """Claims per answer and the run's latency percentiles, as the summary table has them."""
    claims = report.get("claims") or {}
    sent = max(int(claims.get("sent") or 0), 1)
    rows = [
        [k, Html(f'<span data-status="{text(k)}">{int(n):,}</span>'), f"{int(n) / sent:.1%}"]
        for k, n in (claims.get("by_status") or {}).items()
    ]
    lat = report.get("latency_seconds") or {}
    sched = report.get("latency_from_schedule_seconds") or {}
    lat_rows = [
        [name, *(f"{float(s.get(k, 0.0)):.4f}" for k in ("p50", "p95", "p99", "max"))]
        for name, s in (("from send", lat), ("from schedule", sched))
        if s
    ]
    return (
        "<h2>Answers</h2>"
        + table(["status", "claims", "share"], rows, numeric=(1, 2))
        + table(["latency (s)", "p50", "p95", "p99", "max"], lat_rows, numeric=(1, 2, 3, 4))
    )


def _cohorts(report: Mapping[str, Any]) -> str:
    """First answers per cohort: which cohorts a flag breaks, at a glance."""
    by_cohort: Mapping[str, Mapping[str, int]] = report.get("by_cohort") or {}
    if not by_cohort:
        return ""
    keys = _ordered_statuses({k for v in by_cohort.values() for k in v})
    rows = []
    for cohort, counts in by_cohort.items():
        total = sum(int(n) for n in counts.values())
        rows.append(
            [
                cohort,
                Html(f'<span data-cohort="{text(cohort)}">{total:,}</span>'),
                *(f"{int(counts.get(k, 0)):,}" for k in keys),
            ]
        )
    return "<h2>Cohorts</h2><p class='muted'>First answers per device cohort.</p>" + table(
        ["cohort", "answers", *keys], rows, numeric=tuple(range(1, len(keys) + 2))
    )


def _boards(report: Mapping[str, Any]) -> str:
    """A bench's boards, one row each (nothing for a soak)."""
    boards: Sequence[Mapping[str, Any]] = report.get("boards") or []
    if not boards:
        return ""
    rows = []
    for b in boards:
        status = " ".join(f"{k}x{v}" for k, v in (b.get("claims_by_status") or {}).items())
        rows.append(
            [
                Html(f'<span data-board="{text(b["name"])}">{text(b["name"])}</span>'),
                _pass(b.get("ok")),
                b.get("fw", ""),
                b.get("hmac_mode", ""),
                status or "-",
                b.get("reconnects", ""),
                b.get("bad_frames", ""),
                b.get("error") or "",
            ]
        )
    head = ["board", "ok", "firmware", "HMAC", "claims", "reconnects", "bad frames", "error"]
    return "<h2>Boards</h2>" + table(head, rows)


def _side(report: Mapping[str, Any], zero: float | None) -> str:
    """Fault windows, outages and the MQTT side in words (the charts shade them)."""
    run = report.get("run") or {}
    lines_ = mqtt_lines(report.get("mqtt"))
    windows = [w.get("text") for w in run.get("fault_windows") or []]
    outages = report.get("outages") or []
    if not (lines_ or windows or outages):
        return ""
    out = ["<h2>Faults, outages and MQTT</h2><ul>"]
    out += [f"<li>fault window {text(w)}</li>" for w in windows]
    out += [
        f"<li>outage at +{_outage_offset(o, zero):.1f} s for "
        f"{o.get('duration_s') or 0:.1f} s:"
        f" {int(o.get('claims_failed', 0)):,} claims failed across "
        f"{int(o.get('devices_hit', 0)):,} devices</li>"
        for o in outages
    ]
    out += [f"<li>{text(line)}</li>" for line in lines_]
    if report.get("merged_from") and not run:
        out.append(
            "<li class='muted'>merged reports keep no fault or broker windows: see "
            "each shard's own report</li>"
        )
    return "".join(out) + "</ul>"


def _metadata(report: Mapping[str, Any]) -> str:
    """What run this was: fleet, seed, profile, flags, target, IDs, version."""
    run = report.get("run") or {}
    profile = report.get("profile") or run.get("profile") or {}
    flags = report.get("flags") or run.get("flags") or {}
    on = [k for k, v in flags.items() if v in (True, "true")]
    items = [
        ("run ID", report.get("run_id")),
        ("fleet", report.get("fleet")),
        ("seed", report.get("seed")),
        ("target", report.get("target")),
        ("profile", profile.get("name") if isinstance(profile, Mapping) else profile),
        ("flags on", ", ".join(on) or "none"),
        ("model", run.get("model")),
        ("connections", run.get("connection")),
        ("devices", run.get("devices")),
        ("workers", run.get("workers")),
        ("shards", ", ".join(report.get("shards") or [])),
        ("merged from", ", ".join(report.get("merged_from") or [])),
        ("finished", report.get("finished_at")),
        ("report version", report.get("report_version")),
    ]
    return "<h2>Run</h2>" + definitions(items)


def render_run(report: Mapping[str, Any]) -> str:
    """The whole HTML file for a run report."""
    title = f"teddy-harness run {report.get('run_id') or ''}".strip()
    zero = axis_zero(report)
    sections = [
        f"<h1>{text(title)}</h1>",
        _verdict(report),
        _checks(report),
        *charts(report, zero),
        _statuses(report),
        _cohorts(report),
        _boards(report),
        _side(report, zero),
        _metadata(report),
    ]
    return document(title, sections)
