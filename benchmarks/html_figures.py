"""Issue 16's plotting choice: ``python -m benchmarks.html_figures [--points N] [--rounds R]``.

The same four figures (claims per interval stacked by six statuses, violations
per interval, latency p50/p95/p99 from send and from schedule) over ``--points``
intervals, drawn by each candidate:

- **svg**: ``harness.html.svg``, plain SVG written by the harness, no script;
- **plotly**: plotly's figure with its JavaScript bundle inline
  (``include_plotlyjs=True``, the only way it opens offline);
- **altair**: Vega-Lite through altair, its three JavaScript bundles inline
  (``inline=True``, which needs ``vl-convert-python``);
- **matplotlib**: four matplotlib figures saved as SVG and put in the page.

For each: the file's size, the time Python takes to write it (median of
``--rounds``), the time headless Chromium takes to open it and screenshot it
(median, minus an empty page opened in the same round: the machine is shared,
so compare the ratios), whether it opens with the network off (Chromium in a
network namespace of its own, ``unshare -n``) with its figures drawn (SVG or
canvas elements in the rendered DOM), and how many external URLs it names.

A candidate whose library is not installed is skipped and says so
(``pip install plotly altair vl-convert-python matplotlib``). A benchmark, not a
test: the exit code is 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.html.browser import chromium, dump_dom, screenshot

STATUSES = ("200", "401", "404", "409", "429", "timeout")


def data(points: int, seed: int = 7) -> dict[str, list[float]]:
    """A soak's figures per interval: a few hundred claims, a burst of 409s after a restart."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {k: [] for k in STATUSES}
    out.update(violations=[], p50=[], p95=[], p99=[], s50=[], s95=[], s99=[])
    for i in range(points):
        burst = points // 2 <= i < points // 2 + max(points // 20, 1)
        out["200"].append(rng.randint(250, 320) * (0.3 if burst else 1))
        out["401"].append(rng.randint(20, 40))
        out["404"].append(rng.randint(5, 15))
        out["409"].append(rng.randint(60, 120) if burst else rng.randint(0, 3))
        out["429"].append(rng.randint(0, 5))
        out["timeout"].append(rng.randint(20, 60) if burst else 0)
        out["violations"].append(rng.randint(0, 2))
        base = 0.004 + (0.02 if burst else 0.0)
        for a, b in (("p50", "s50"), ("p95", "s95"), ("p99", "s99")):
            m = {"p50": 1.0, "p95": 3.0, "p99": 5.0}[a]
            out[a].append(base * m * rng.uniform(0.9, 1.1))
            out[b].append(base * m * rng.uniform(1.0, 1.4))
    return out


def page(body: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"
    )


def build_svg(d: dict[str, list[float]]) -> str:
    from harness.html.run_page import status_colour
    from harness.html.svg import Layer, lines, stacked_bars

    xs = [float(i) for i in range(len(d["200"]))]
    charts = [
        stacked_bars(
            "o", "outcomes", xs, 1.0, [Layer(k, d[k], status_colour(k)) for k in STATUSES]
        ),
        stacked_bars("v", "violations", xs, 1.0, [Layer("v", d["violations"], "#c62828")]),
        lines(
            "l", "from send", xs, 1.0, [Layer(k, d[k], "#1e88e5") for k in ("p50", "p95", "p99")]
        ),
        lines(
            "s", "from sched", xs, 1.0, [Layer(k, d[k], "#fb8c00") for k in ("s50", "s95", "s99")]
        ),
    ]
    return page("".join(charts))


def build_plotly(d: dict[str, list[float]]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    xs = list(range(len(d["200"])))
    fig = make_subplots(rows=4, cols=1)
    for k in STATUSES:
        fig.add_trace(go.Bar(x=xs, y=d[k], name=k), row=1, col=1)
    fig.add_trace(go.Bar(x=xs, y=d["violations"], name="violations"), row=2, col=1)
    for k in ("p50", "p95", "p99"):
        fig.add_trace(go.Scatter(x=xs, y=d[k], name=k, mode="lines"), row=3, col=1)
    for k in ("s50", "s95", "s99"):
        fig.add_trace(go.Scatter(x=xs, y=d[k], name=k, mode="lines"), row=4, col=1)
    fig.update_layout(barmode="stack", height=1000, width=960)
    return str(fig.to_html(include_plotlyjs=True, full_html=True))


def build_altair(d: dict[str, list[float]]) -> str:
    import altair as alt

    n = len(d["200"])
    rows = [{"t": i, "status": k, "n": d[k][i]} for k in STATUSES for i in range(n)]
    lat = [{"t": i, "p": k, "s": d[k][i]} for k in ("p50", "p95", "p99", "s50", "s95", "s99")
           for i in range(n)]  # fmt: skip
    viol = [{"t": i, "n": d["violations"][i]} for i in range(n)]
    outcomes = (
        alt.Chart(alt.Data(values=rows)).mark_bar().encode(x="t:Q", y="sum(n):Q", color="status:N")
    )
    violations = alt.Chart(alt.Data(values=viol)).mark_bar().encode(x="t:Q", y="n:Q")
    latency = alt.Chart(alt.Data(values=lat)).mark_line().encode(x="t:Q", y="s:Q", color="p:N")
    chart = alt.vconcat(outcomes, violations, latency).properties(autosize="fit")
    return str(chart.to_html(inline=True))


def build_matplotlib(d: dict[str, list[float]]) -> str:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    xs = list(range(len(d["200"])))
    svgs = []
    fig, ax = plt.subplots(figsize=(9.6, 2.4))
    bottom = [0.0] * len(xs)
    for k in STATUSES:
        ax.bar(xs, d[k], bottom=bottom, width=1.0, label=k)
        bottom = [b + v for b, v in zip(bottom, d[k], strict=True)]
    figs = [fig]
    fig, ax = plt.subplots(figsize=(9.6, 2.4))
    ax.bar(xs, d["violations"], width=1.0)
    figs.append(fig)
    for keys in (("p50", "p95", "p99"), ("s50", "s95", "s99")):
        fig, ax = plt.subplots(figsize=(9.6, 2.4))
        for k in keys:
            ax.plot(xs, d[k], label=k)
        figs.append(fig)
    for fig in figs:
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        plt.close(fig)
        svgs.append(re.sub(r"^<\?xml[^>]*>\s*<!DOCTYPE[^>]*>", "", buf.getvalue()))
    return page("".join(svgs))


CANDIDATES: dict[str, tuple[str, Callable[[dict[str, list[float]]], str]]] = {
    "svg": ("harness", build_svg),
    "plotly": ("plotly", build_plotly),
    "altair": ("vl_convert", build_altair),
    "matplotlib": ("matplotlib", build_matplotlib),
}


def open_once(path: Path) -> float:
    """Seconds for Chromium to open ``path`` and screenshot it (``harness.html.browser``,
    as the browser test and the README's screenshots open pages)."""
    began = time.perf_counter()
    screenshot(path, path.with_suffix(".png"), size=(1000, 1100), offline=False)
    return time.perf_counter() - began


def drawn(dom: str) -> int:
    """Figures drawn in the rendered DOM: SVG and canvas elements."""
    return len(re.findall(r"<(?:svg|canvas)\b", dom))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--points", type=int, default=720, help="intervals per figure (default 720)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    d = data(args.points)
    browser = chromium()
    offline = os.geteuid() == 0  # a network namespace of its own needs root
    tmp = Path(tempfile.mkdtemp(prefix="html_figures."))
    blank = tmp / "blank.html"
    blank.write_text(page("<p>empty</p>"), encoding="utf-8")
    built: dict[str, tuple[Path, list[float]]] = {}
    for name, (module, build) in CANDIDATES.items():
        try:
            __import__(module)
        except ImportError:
            print(f"{name}: skipped ({module} is not installed)")
            continue
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            html = build(d)
            times.append(time.perf_counter() - began)
        path = tmp / f"{name}.html"
        path.write_text(html, encoding="utf-8")
        built[name] = (path, times)
    renders: dict[str, list[float]] = {name: [] for name in built}
    if browser:
        for _ in range(args.rounds):  # side by side, each round: the blank page, then each
            base = open_once(blank)
            for name, (path, _) in built.items():
                renders[name].append(open_once(path) - base)
    print(f"{args.points} intervals, {args.rounds} rounds; {tmp}")
    print(f"{'candidate':<12}{'bytes':>11}{'write ms':>10}{'open ms':>9}{'offline':>9}"
          f"{'figures':>9}{'ext URLs':>9}")  # fmt: skip
    for name, (path, times) in built.items():
        size = path.stat().st_size
        text = path.read_text(encoding="utf-8")
        urls = len(set(re.findall(r"(?:src|href)=[\"'](https?://[^\"']+)", text)))
        if browser:
            dom = dump_dom(path, offline=offline)
            figs = drawn(dom)
            opened = f"{statistics.median(renders[name]) * 1000:.0f}"
            offline = "yes" if figs else "NO"
        else:
            figs, opened, offline = 0, "n/a", "n/a"
        print(f"{name:<12}{size:>11,}{statistics.median(times) * 1000:>10.1f}{opened:>9}"
              f"{offline:>9}{figs:>9}{urls:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
