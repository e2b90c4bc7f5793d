"""The SVG charts: every value drawn and counted, gaps left as gaps, axes that read."""

from __future__ import annotations

import re

from harness.html.svg import Band, Layer, lines, nice_step, stacked_bars


def test_stacked_bars_count_every_value_in_its_interval_and_layer() -> None:
    xs = [0.0, 1.0, 2.0, 4.0]  # no claims in the interval at 3 s
    ok, bad = [5, 0, 7, 1], [1, 2, 0, 0]
    svg = stacked_bars("o", "t", xs, 1.0, [Layer("200", ok, "#0a0"), Layer("409", bad, "#a00")])
    assert [int(n) for n in re.findall(r'data-n="(\d+)"', svg)] == [6, 2, 7, 1]
    assert re.findall(r'data-t="([\d.]+)"', svg) == ["0", "1", "2", "4"]
    # One path per layer, one rectangle in it per non-zero value.
    paths = dict(re.findall(r'data-layer="(\w+)" fill="[^"]+" d="([^"]+)"', svg))
    assert paths["200"].count("M") == 3 and paths["409"].count("M") == 2
    assert "+2 s: 200: 7" in svg and "200 13" not in svg and ">200<tspan" in svg


def test_lines_break_where_an_interval_had_no_claims() -> None:
    svg = lines("l", "t", [0.0, 1.0, 2.0, 3.0], 1.0, [Layer("p99", [0.1, None, 0.2, 0.3], "#f00")])
    (d,) = re.findall(r'data-layer="p99" fill="none"[^>]* d="([^"]+)"', svg)
    assert d.count("M") == 2 and d.count("L") == 1
    assert "max 300 ms" in svg


def test_bands_are_drawn_with_their_label_and_kind() -> None:
    svg = stacked_bars(
        "o",
        "t",
        [0.0, 1.0],
        1.0,
        [Layer("200", [1, 1], "#0a0")],
        [Band(0.5, 1.2, "fault redis:down@0.5s+0.7s", "fault")],
    )
    assert 'data-kind="fault"' in svg and "fault redis:down@0.5s+0.7s" in svg


def test_nice_steps_are_round_numbers_of_seconds() -> None:
    assert nice_step(10) == 2
    assert nice_step(60) == 10
    assert nice_step(600) == 120
    assert nice_step(3600) == 600
    assert nice_step(0.02, 4) == 0.005


def test_lines_break_over_intervals_missing_from_the_series() -> None:
    # Nothing completed at 2 s and 3 s (a stalled server): no point, and no bridge.
    svg = lines("l", "t", [0.0, 1.0, 4.0, 5.0], 1.0, [Layer("p99", [0.1, 0.1, 0.2, 0.3], "#f00")])
    (d,) = re.findall(r'data-layer="p99" fill="none"[^>]* d="([^"]+)"', svg)
    assert d.count("M") == 2 and d.count("L") == 2


def test_a_legend_with_more_layers_than_fit_says_how_many_more() -> None:
    layers = [Layer(f"check_number_{i}_with_a_long_name", [1], "#000") for i in range(15)]
    svg = stacked_bars("v", "t", [0.0], 1.0, layers)
    assert "+4 more" in svg and "check_number_11_with_a_l<" not in svg
    assert svg.count("<tspan") == 12
