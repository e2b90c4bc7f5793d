"""The HTML report of ``harness compat``: the GO / NO-GO line and the matrix as a grid.

A row per cohort, a column per configuration; each cell is coloured by the
share of the cohort's claims that end rejected (green none, red all) and says
what devices end up with, measured or predicted by the oracle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.html.page import Html, definitions, document, figure, table, text, verdict


def _colour(rejected: float) -> str:
    """Green at 0, amber at a half, red at 1 (HSL hue 120 down to 0)."""
    hue = round(120 * (1 - min(max(rejected, 0.0), 1.0)))
    return f"hsl({hue} 65% 82%)"


def _cell(cohort: str, key: str, cell: Mapping[str, Any]) -> Html:
    episodes = int(cell.get("episodes") or 0)
    if not episodes:
        return Html('<span class="muted">-</span>')
    share = cell.get("share") or {}
    ranked = sorted(share.items(), key=lambda kv: (-kv[1], kv[0]))
    body = "<br>".join(f"{text(k)} {float(v):.0%}" for k, v in ranked)
    rejected = float(cell.get("rejected_share") or 0.0)
    mark = "" if cell.get("oracle_agrees", True) else ' <b title="oracle disagrees">!</b>'
    failed = cell.get("failed_checks") or []
    if failed:  # why compat may give no verdict: these answers broke the contract
        mark += f"<div class='fail'>failed: {', '.join(text(f) for f in failed)}</div>"
    return Html(
        f'<div class="cell" style="background:{_colour(rejected)};padding:4px 6px" '
        f'data-cell="{text(cohort)}|{text(key)}" data-rejected="{rejected:.4f}">'
        f"{body}{mark}<div class='muted'>{text(cell.get('source', ''))}, {episodes:,} "
        f"claims</div></div>"
    )


def render_compat(report: Mapping[str, Any]) -> str:
    """The whole HTML file for a compat report."""
    configs = report.get("configurations") or []
    keys = [c["key"] for c in configs]
    go = bool(report.get("normalize_go"))
    # GO, NO-GO or NO VERDICT: a measurement not of the declared server is no verdict,
    # which is not a NO-GO (older reports have only normalize_go).
    headline = report.get("decision") or ("GO" if go else "NO-GO")
    cohorts = report.get("cohorts") or []
    rows = []
    for c in cohorts:
        name = c["name"]
        rows.append(
            [
                Html(
                    f"{text(name)}<div class='muted'>fw {text(c.get('firmware_version', ''))}, "
                    f"{text(c.get('id_style', ''))}, {text(c.get('signing', ''))} signing</div>"
                ),
                Html(f'<span data-cohort="{text(name)}">{int(c.get("devices", 0)):,}</span>'),
                *(_cell(name, k, (c.get("by_configuration") or {}).get(k) or {}) for k in keys),
            ]
        )
    shares = report.get("fleet_rejected_share") or {}
    rows.append(
        [
            Html("<b>fleet rejected</b>"),
            figure("devices", int(report.get("devices") or 0)),
            *(
                Html(f'<b data-fleet-rejected="{text(k)}">{float(shares.get(k, 0.0)):.1%}</b>')
                for k in keys
            ),
        ]
    )
    head = [
        "cohort",
        "devices",
        *(f"{c.get('title') or c['key']} ({c.get('source')})" for c in configs),
    ]
    why = [str(report.get("idempotency") or "")]
    if report.get("oracle_disagreements"):
        why.append(
            "measured answers differ from the oracle for "
            + ", ".join(map(str, report["oracle_disagreements"]))
        )
    title = f"teddy-harness compat {report.get('fleet') or ''}".strip()
    profile = report.get("profile") or {}
    flags = report.get("declared_flags") or {}
    sections = [
        f"<h1>{text(title)}</h1>",
        verdict(go, headline, []),
        f"<p data-figure='compat-verdict'>{text(report.get('verdict', ''))}</p>",
        "<ul>" + "".join(f"<li>{text(w)}</li>" for w in why if w) + "</ul>",
        "<h2>Matrix</h2><p class='muted'>What each cohort's devices end up with, per "
        "configuration; the colour is the share rejected.</p>",
        table(head, rows, numeric=(1,), cls="matrix"),
        "<h2>Run</h2>",
        definitions(
            [
                ("fleet", report.get("fleet")),
                ("target", report.get("target")),
                (
                    "profile",
                    f"{profile.get('name')} ({profile.get('commit')}), "
                    f"ENVIRONMENT={profile.get('environment')}",
                ),
                ("flags on", ", ".join(k for k, v in flags.items() if v == "true") or "none"),
                ("claims per cohort", report.get("claims_per_cohort")),
            ]
        ),
    ]
    return document(title, sections)
