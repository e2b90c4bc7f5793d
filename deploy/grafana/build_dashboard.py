"""Build ``deploy/grafana/harness.json``: ``python deploy/grafana/build_dashboard.py``.

The dashboard is code, built with Grafana's own ``grafana-foundation-sdk``, so
panels are typed builders, not hand-edited JSON. ``PANELS`` is the one list of
what it shows and each panel's PromQL; the test
(``tests/deploy/test_grafana.py``) starts a real Prometheus scraping a real
soak and the server it drives, evaluates every query in the written JSON through
Prometheus' HTTP API, and requires each one to return series. It also requires
the committed file to be what this script writes now.

Queries sum over every scraped instance (shards, ``--workers`` parents, pushed
groups), as ``deploy/prometheus/prometheus.yml`` describes, and use Grafana's
``$__rate_interval``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).with_name("harness.json")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def _q(p: float, family: str) -> str:
    return f"histogram_quantile({p}, sum by (le) (rate({family}_bucket[{RATE}])))"


@dataclass(frozen=True)
class Spec:
    """One panel: its title, kind, unit, and (legend, PromQL) per query."""

    title: str
    kind: str  # timeseries | stacked | heatmap | stat
    unit: str
    queries: tuple[tuple[str, str], ...]
    description: str = ""
    width: int = 12


PANELS: tuple[Spec, ...] = (
    Spec(
        "Claims per second by outcome",
        "stacked",
        "reqps",
        (("{{outcome}}", f"sum by (outcome) (rate(harness_claims_total[{RATE}]))"),),
        "Every claim the harness sent, by HTTP status, timeout or connection_error.",
    ),
    Spec(
        "Active devices",
        "stat",
        "short",
        (
            ("devices", "sum(harness_devices_active)"),
            ("runs in progress", "sum(harness_run_running)"),
        ),
        "Virtual devices taking part, and runs still going.",
        width=6,
    ),
    Spec(
        "Violations by check",
        "timeseries",
        "short",
        (("{{check}}", f"sum by (check) (increase(harness_check_violations_total[{RATE}]))"),),
        "Oracle verdicts broken per interval: any line above zero fails the run.",
        width=6,
    ),
    Spec(
        "Claim latency percentiles",
        "timeseries",
        "s",
        (
            *(
                (f"p{int(p * 100)} from send", _q(p, "harness_claim_latency_seconds"))
                for p in (0.5, 0.95, 0.99)
            ),
            ("p99 from schedule", _q(0.99, "harness_claim_scheduled_latency_seconds")),
        ),
        "From the histograms' buckets (the seed checklist's SLO edges 0.2 0.5 1 2 5 s), so "
        "interpolated between edges; the report's HDR percentiles are exact to 3 digits.",
    ),
    Spec(
        "Claim latency heatmap",
        "heatmap",
        "s",
        (("{{le}}", f"sum by (le) (increase(harness_claim_latency_seconds_bucket[{RATE}]))"),),
        "Claims per latency bucket per interval.",
    ),
    Spec(
        "Server counters beside the harness",
        "timeseries",
        "reqps",
        (
            ("server claim_success_total", f"sum(rate(claim_success_total[{RATE}]))"),
            ("server claim_replay_cached_total", f"sum(rate(claim_replay_cached_total[{RATE}]))"),
            (
                "server claim_replay_conflict_total",
                f"sum(rate(claim_replay_conflict_total[{RATE}]))",
            ),
            ("harness 200s", f'sum(rate(harness_claims_total{{outcome="200"}}[{RATE}]))'),
            ("harness 409s", f'sum(rate(harness_claims_total{{outcome="409"}}[{RATE}]))'),
        ),
        "The server's own v5 counters (its /metrics) and what the harness saw: success plus "
        "replays equals the harness's 200s, conflicts its 409s.",
    ),
    Spec(
        "MQTT sessions connected",
        "timeseries",
        "short",
        (
            ("connected", "sum(harness_mqtt_sessions_connected)"),
            (
                "{{reason}} connects/s",
                f"sum by (reason) (rate(harness_mqtt_connects_total[{RATE}]))",
            ),
        ),
        "Device sessions online, and connect attempts by CONNACK reason.",
    ),
    Spec(
        "MQTT heartbeat latency",
        "timeseries",
        "s",
        (
            ("p50", _q(0.5, "harness_mqtt_heartbeat_latency_seconds")),
            ("p99", _q(0.99, "harness_mqtt_heartbeat_latency_seconds")),
        ),
        "Device publish to observer receipt.",
    ),
    Spec(
        "Token refreshes",
        "timeseries",
        "reqps",
        (("{{outcome}}", f"sum by (outcome) (rate(harness_token_refreshes_total[{RATE}]))"),),
        "Access-token refreshes by answer (v5 refuses every genuine one: its decode has "
        "no audience).",
    ),
)


def _panel(spec: Spec) -> dashboard.Panel:
    kinds = {"stat": stat.Panel, "heatmap": heatmap.Panel}
    panel = kinds.get(spec.kind, timeseries.Panel)()
    panel.title(spec.title).description(spec.description).unit(spec.unit).datasource(DS)
    panel.height(8).span(spec.width)
    if spec.kind == "stacked":
        panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(60)
    for i, (legend, expr) in enumerate(spec.queries):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(65 + i))
        if spec.kind == "heatmap":
            query.format(PromQueryFormat.HEATMAP)
        panel.with_target(query)
    return panel


def build() -> str:
    """The dashboard JSON as the script writes it."""
    board = (
        dashboard.Dashboard("Teddy claim harness")
        .uid("teddy-claim-harness")
        .tags(["teddy", "harness", "generated"])
        .description("A soak's claims, verdicts, latency, the server's counters and MQTT.")
        .refresh("5s")
        .time("now-15m", "now")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )
    board.with_row(dashboard.Row("Claims and verdicts"))
    for spec in PANELS[:5]:
        board.with_panel(_panel(spec))
    board.with_row(dashboard.Row("Server and MQTT"))
    for spec in PANELS[5:]:
        board.with_panel(_panel(spec))
    return JSONEncoder(sort_keys=True, indent=2).encode(board.build()) + "\n"


def main() -> None:
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
