"""The HTML document around the sections: styles inline, no script, nothing fetched.

The Content-Security-Policy forbids every fetch (``default-src 'none'``), so a
file that opens offline cannot be made to need the network by a later change:
the browser would refuse the request and the browser test would see it. All
text goes through ``text`` (escaped and ``scrub``-bed): a report is shown in
meetings and attached to CI runs, so it masks what every other output masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from harness import __version__
from harness.masking import scrub

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{padding:12px 16px;border-radius:6px;font-size:18px;font-weight:600;margin:12px 0}
.passed{background:#e3f4e1;color:#1d5e1a}.failed{background:#fbe3e1;color:#8a1c14}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}.fail{color:#b3261e;font-weight:600}.pass{color:#2e7d32}
.ex{font:12px ui-monospace,monospace;color:#555}.note{color:#8a5a00}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#666}dd{margin:0}
div.cell{min-width:110px}.muted{color:#777}svg.chart{max-width:100%}
"""


def text(value: object) -> str:
    """Any value as HTML text: masked like every other output, then escaped."""
    return escape(scrub(str(value)))


def num(value: float | int) -> str:
    """A count with thousands separators, a share or seconds as given."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[object]],
    numeric: Sequence[int] = (),
    cls: str = "",
) -> str:
    """A table; cells are text unless already HTML (``Html``); columns in ``numeric``
    are right-aligned."""
    out = [f'<table class="{cls}"><thead><tr>']
    out += [f'<th class="{"n" if i in numeric else ""}">{text(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            body = cell if isinstance(cell, Html) else text(cell)
            out.append(f'<td class="{"n" if i in numeric else ""}">{body}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Html(str):
    """Markup already made safe (escaped and masked): ``table`` puts it in as it is."""


def figure(name: str, value: object, tag: str = "span") -> Html:
    """A figure the browser test reads back from the DOM (``data-figure``)."""
    shown = num(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    return Html(f'<{tag} data-figure="{escape(name)}">{text(shown)}</{tag}>')


def definitions(items: Iterable[tuple[str, object]]) -> str:
    """The run's metadata as a definition list; empty values are left out."""
    rows = [f"<dt>{text(k)}</dt><dd>{text(v)}</dd>" for k, v in items if v not in (None, "", [])]
    return "<dl>" + "".join(rows) + "</dl>"


def verdict(passed: bool, headline: str, why: Sequence[str]) -> str:
    """The banner at the top (green only when passed) and the reasons under it."""
    cls = "passed" if passed else "failed"
    reasons = "".join(f"<li>{text(w)}</li>" for w in why)
    return f'<div class="verdict {cls}" data-figure="verdict">{text(headline)}</div>' + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def document(title: str, sections: Iterable[str]) -> str:
    """The whole file: one document, everything inline."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(sections)
        + f'<p class="muted">teddy-harness {escape(__version__)}</p></body></html>\n'
    )
