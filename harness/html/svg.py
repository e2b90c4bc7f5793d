"""Charts as inline SVG: stacked bars and percentile lines on a time axis, no script.

Measured against plotly's inline bundle, Vega-Lite via altair and matplotlib's SVG
(``benchmarks/html_figures.py``, figures in the README): plain SVG is the smallest
file, the fastest to render and to write, opens offline by construction, and its
numbers are in the DOM, where a browser test can read them. Each layer is one
``<path>`` of rectangles (a rect element per bar is 2.5x the bytes), and each
interval has one hover strip whose ``<title>`` is the tooltip and whose
``data-n`` is its claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 170, 14, 34
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
LEGEND_ROWS = 12  # legend lines beside a 240 px chart
LEGEND_CHARS = 24  # a name past this is cut in the legend (the tooltip has it whole)
BAND_COLOURS = {"fault": "#f2b134", "outage": "#d9534f", "mqtt": "#5b8def"}


@dataclass(frozen=True, slots=True)
class Band:
    """A span of the run drawn behind a chart: a fault window, an outage, a broker loss."""

    start: float  # seconds from the run's start
    end: float
    label: str
    kind: str = "fault"


@dataclass(frozen=True, slots=True)
class Layer:
    """One named series of a chart: a status's counts, or a percentile's seconds."""

    name: str
    values: Sequence[float | None]
    colour: str
    dashed: bool = False


def nice_step(span: float, ticks: int = 6) -> float:
    """A 1, 2 or 5 times a power of ten near ``span / ticks`` (seconds: 15, 30, 60 too)."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    for s in (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0):
        if 10 < raw <= s and raw > s / 2:
            return s
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _seconds(v: float) -> str:
    if v >= 120 and v % 60 == 0:
        return f"{v / 60:g}m"
    return f"{v:g}s"


def _signed(shown: str, v: float) -> str:
    """``+3s``, ``0s`` or ``-0.9``: seconds from the run's start (the first interval may
    begin before it)."""
    return shown if v <= 0 else f"+{shown}"


def _value(v: float, unit: str) -> str:
    if unit == "s":
        return f"{v * 1000:.3g} ms" if v < 1 else f"{v:.3g} s"
    return f"{v:,.0f}"


class _Frame:
    """The axes: x from ``lo`` to ``hi`` seconds since the run started (``lo`` may be
    negative: the first interval starts on the wall clock's step, before the run), y
    from 0 to ``top``."""

    def __init__(self, lo: float, hi: float, top: float) -> None:
        self.lo = lo
        self.span = max(hi - lo, 1e-9)
        self.top = top if top > 0 else 1.0

    def x(self, t: float) -> float:
        return LEFT + PLOT_W * min(max(t - self.lo, 0.0), self.span) / self.span

    def y(self, v: float) -> float:
        return TOP + PLOT_H * (1 - min(v, self.top) / self.top)

    def axes(self, unit: str, y_label: str) -> list[str]:
        out = ['<g class="axes" font-size="11" fill="#444">']
        ystep = nice_step(self.top, 4)
        v = 0.0
        while v <= self.top * 1.0001:
            y = self.y(v)
            label = _value(v, unit) if unit == "s" else f"{v:,.{0 if ystep >= 1 else 2}f}"
            out.append(
                f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#e3e3e3"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end">{label}</text>'
            )
            v += ystep
        xstep = nice_step(self.span)
        t = math.ceil(self.lo / xstep) * xstep + 0.0
        while t <= self.lo + self.span * 1.0001:
            x = self.x(t)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H + 4}" '
                f'stroke="#888"/><text x="{x:.1f}" y="{TOP + PLOT_H + 16}" '
                f'text-anchor="middle">{_signed(_seconds(t), t)}</text>'
            )
            t += xstep
        out.append(
            f'<text x="{LEFT + PLOT_W / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle">'
            "seconds since the run started</text>"
            f'<text transform="translate(12 {TOP + PLOT_H / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
            f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{TOP + PLOT_H}" y2="{TOP + PLOT_H}" '
            'stroke="#888"/></g>'
        )
        return out

    def bands(self, bands: Sequence[Band]) -> list[str]:
        out = []
        for i, b in enumerate(bands):  # labels on rows of their own: windows may overlap
            x0, x1 = self.x(b.start), self.x(max(b.end, b.start))
            colour = BAND_COLOURS.get(b.kind, "#999")
            out.append(
                f'<g class="band" data-kind="{escape(b.kind)}"><rect x="{x0:.1f}" y="{TOP}" '
                f'width="{max(x1 - x0, 2):.1f}" height="{PLOT_H}" fill="{colour}" '
                f'fill-opacity="0.18"><title>{escape(b.label)}</title></rect>'
                f'<text x="{x0 + 3:.1f}" y="{TOP + 11 + 11 * (i % 4)}" font-size="10" '
                f'fill="{colour}">'
                f"{escape(b.label[:40])}</text></g>"
            )
        return out


def _domain(xs: Sequence[float], step: float, bands: Sequence[Band]) -> tuple[float, float]:
    """The x axis: every interval, and every band (a broker window in the hold after the
    last claim is still drawn whole)."""
    lo = min([0.0, *xs[:1]])
    hi = max([(max(xs) + step) if xs else step, *(b.end for b in bands)])
    return lo, hi


def _legend(layers: Sequence[Layer], totals: Sequence[str]) -> list[str]:
    out = ['<g class="legend" font-size="11">']
    shown = list(zip(layers, totals, strict=True))
    if len(shown) > LEGEND_ROWS:  # what fits beside the plot; the rest are in the tooltips
        more = len(shown) - LEGEND_ROWS + 1
        shown = [*shown[: LEGEND_ROWS - 1], (Layer(f"+{more} more", [], "#fff"), "")]
    for i, (layer, total) in enumerate(shown):
        y = TOP + 6 + i * 16
        x = LEFT + PLOT_W + 14
        dash = ' stroke-dasharray="4 3"' if layer.dashed else ""
        mark = (
            f'<line x1="{x}" x2="{x + 14}" y1="{y}" y2="{y}" stroke="{layer.colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(
            f'{mark}<text x="{x + 20}" y="{y + 4}">{escape(layer.name[:LEGEND_CHARS])}'
            f'<tspan fill="#666"> {escape(total)}</tspan></text>'
        )
    out.append("</g>")
    return out


def _svg(kind: str, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(kind)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def stacked_bars(
    kind: str,
    title: str,
    xs: Sequence[float],
    step: float,
    layers: Sequence[Layer],
    bands: Sequence[Band] = (),
    y_label: str = "claims per interval",
) -> str:
    """Counts per interval, stacked in ``layers`` order; ``xs``: each interval's start."""
    stacks = [sum(float(layer.values[i] or 0) for layer in layers) for i in range(len(xs))]
    frame = _Frame(*_domain(xs, step, bands), max(stacks, default=0.0) * 1.05)
    body = frame.bands(bands) + frame.axes("n", y_label)
    width = max(PLOT_W * step / frame.span - 0.6, 0.6)
    base = [0.0] * len(xs)
    for layer in layers:
        d = []
        for i, t in enumerate(xs):
            v = float(layer.values[i] or 0)
            if v <= 0:
                continue
            y_top, y_base = frame.y(base[i] + v), frame.y(base[i])
            d.append(f"M{frame.x(t):.1f} {y_top:.1f}h{width:.1f}V{y_base:.1f}h{-width:.1f}z")
            base[i] += v
        if d:
            body.append(
                f'<path class="layer" data-layer="{escape(layer.name)}" fill="{layer.colour}" '
                f'd="{"".join(d)}"/>'
            )
    for i, t in enumerate(xs):  # the hover strips: the tooltip and the DOM's figures
        parts = [f"{layer.name}: {layer.values[i]:,.0f}" for layer in layers if layer.values[i]]
        tip = f"{_signed(_num(t), t)} s: " + (", ".join(parts) or "none")
        body.append(
            f'<rect class="hover" data-t="{_num(t)}" data-n="{stacks[i]:.0f}" '
            f'x="{frame.x(t):.1f}" y="{TOP}" width="{width:.1f}" height="{PLOT_H}" '
            f'fill="transparent"><title>{escape(tip)}</title></rect>'
        )
    totals = [f"{sum(float(v or 0) for v in layer.values):,.0f}" for layer in layers]
    body += _legend(layers, totals)
    return _svg(kind, title, body)


def lines(
    kind: str,
    title: str,
    xs: Sequence[float],
    step: float,
    layers: Sequence[Layer],
    bands: Sequence[Band] = (),
    y_label: str = "latency",
) -> str:
    """Values per interval as lines, in seconds; each point sits in the middle of its
    interval. An interval without a value (None, or no point at all: nothing completed
    in it, as when a server stalls) breaks its line instead of bridging the gap."""
    values = [float(v) for layer in layers for v in layer.values if v is not None]
    frame = _Frame(*_domain(xs, step, bands), max(values, default=0.0) * 1.08)
    body = frame.bands(bands) + frame.axes("s", y_label)
    for layer in layers:
        d, pen, last = [], "M", None
        for t, v in zip(xs, layer.values, strict=True):
            if v is None or (last is not None and t - last > step * 1.5):
                pen = "M"
            last = t if v is not None else None
            if v is None:
                continue
            d.append(f"{pen}{frame.x(t + step / 2):.1f} {frame.y(float(v)):.1f}")
            pen = "L"
        if d:
            dash = ' stroke-dasharray="4 3"' if layer.dashed else ""
            body.append(
                f'<path class="line" data-layer="{escape(layer.name)}" fill="none" '
                f'stroke="{layer.colour}" stroke-width="1.6"{dash} d="{"".join(d)}"/>'
            )
    peaks = [max((v for v in layer.values if v is not None), default=None) for layer in layers]
    totals = ["" if p is None else f"max {_value(p, 's')}" for p in peaks]
    body += _legend(layers, totals)
    return _svg(kind, title, body)
