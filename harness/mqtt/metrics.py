"""The MQTT side's Prometheus families, read from the run's ``MqttStats`` on scrape.

No device ID in any label: reasons, outcomes and kinds only, a bounded set. The
families are registered on the run's own registry when the MQTT side starts
(``SoakMetrics.on_mqtt``); with ``--workers`` the parent registers the merged
stats at the end, so pushed and written figures have them and a live scrape of
the parent does not (a worker's live MQTT figures stay in the worker).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from harness.mqtt.stats import MqttStats
from harness.results import LatencyHistogram

# Heartbeats cross a loopback broker in milliseconds; a refresh is an HTTP round trip.
LATENCY_EDGES: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def histogram(name: str, doc: str, hist: LatencyHistogram) -> HistogramMetricFamily:
    """An HDR histogram at ``LATENCY_EDGES`` (cumulative, exact per edge)."""
    fam = HistogramMetricFamily(name, doc)
    counts = hist.cumulative(LATENCY_EDGES)
    rows = [(floatToGoString(e), n) for e, n in zip(LATENCY_EDGES, counts, strict=True)]
    rows.append((floatToGoString(math.inf), max(hist.count, counts[-1])))
    fam.add_metric([], rows, hist.mean * hist.count)
    return fam


class MqttCollector:
    """Collects ``stats`` as they are at each scrape."""

    def __init__(self, stats: MqttStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "harness_mqtt_sessions_connected",
            "Device sessions connected to the broker now.",
            value=s.online,
        )
        connects = CounterMetricFamily(
            "harness_mqtt_connects",
            "Connect attempts by CONNACK reason ('no connection': no CONNACK came back).",
            labels=["reason"],
        )
        for reason, n in sorted(dict(s.connacks).items()):
            connects.add_metric([reason], n)
        yield connects
        acked = CounterMetricFamily(
            "harness_mqtt_publishes_acked",
            "Device publishes the broker acknowledged (PUBACK), by kind.",
            labels=["kind"],
        )
        acked.add_metric(["heartbeat"], s.counts["heartbeats_sent"])
        acked.add_metric(["birth"], s.counts["births_acked"])
        yield acked
        yield histogram(
            "harness_mqtt_heartbeat_latency_seconds",
            "Heartbeat latency from the device's send to the observer's receipt.",
            s.heartbeat_latency,
        )
        refreshes = CounterMetricFamily(
            "harness_token_refreshes",
            "Access-token refreshes (POST /api/v1/pair/token/refresh), by outcome.",
            labels=["outcome"],
        )
        for outcome, n in sorted(dict(s.refresh_outcomes).items()):
            refreshes.add_metric([outcome], n)
        yield refreshes
        yield histogram(
            "harness_token_refresh_latency_seconds",
            "Token refresh latency, send to answer.",
            s.refresh_latency,
        )
