"""The one list of a run's ways out: report JSON, JUnit, HTML, console, Prometheus HTTP,
Pushgateway and node_exporter textfile.

Soak, ``hil run``, compat and ``report merge`` all write through ``Exporters``,
so an option means the same everywhere and is checked the same way: every
output is checked before the run starts (bad input is exit 2 with nothing
started), and after it the report is written first, so no later failure loses it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import IO, Any

from harness.errors import HarnessInputError
from harness.html import write_html
from harness.junit import write_junit
from harness.metrics import (
    MetricsServer,
    SoakMetrics,
    push_to_gateway,
    serve_metrics,
    write_textfile,
)
from harness.report import check_outputs, summary_table, write_report


@dataclass(slots=True)
class Exporters:
    """Where one run's results go; empty fields are outputs not asked for."""

    report: str | None = None
    junit: str | None = None
    metrics_port: int | None = None
    pushgateway: str | None = None
    textfile: str | None = None
    console: IO[str] | None = None  # the summary table (stdout when None)
    quiet: bool = False  # no summary table
    html: str | None = None  # the HTML report (harness.html)
    metrics: SoakMetrics | None = None
    _server: MetricsServer | None = None

    @property
    def wants_metrics(self) -> bool:
        return self.metrics_port is not None or bool(self.pushgateway or self.textfile)

    @property
    def served(self) -> SoakMetrics | None:
        """The metrics ``/metrics`` serves during the run (None: not served): ``--workers``
        feeds them live from the workers; pushed and textfile figures need only the end."""
        return self.metrics if self._server is not None else None

    def check(self) -> None:
        """Every output writable and every URL well formed, before anything runs."""
        check_outputs(self.report, self.junit, self.textfile, self.pushgateway, self.html)

    def start(self, run_id: str | None, fleet: str | None) -> list[SoakMetrics]:
        """The observers the outputs need (live Prometheus metrics), serving them when asked."""
        if not self.wants_metrics:
            return []
        self.metrics = SoakMetrics(run_id=run_id, fleet=fleet)
        if self.metrics_port is not None:
            self._server = serve_metrics(self.metrics.registry, self.metrics_port)
        return [self.metrics]

    def stop(self) -> None:
        """The /metrics endpoint stops with the run."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def write(self, report: dict[str, Any], shard_label: str | None = None) -> None:
        """Everything asked for: the JSON, JUnit and the summary first, then the HTML and
        the metrics' ways out, so a Pushgateway that died during the run or an HTML path
        that broke never costs the report or the summary (the first failure is raised
        last, exit 2)."""
        if self.report:
            write_report(report, self.report)
        if self.junit:
            write_junit(report, self.junit)
        if not self.quiet:
            print(summary_table(report), file=self.console or sys.stdout)
        run_id = str(report.get("run_id") or "")
        failed: HarnessInputError | None = None
        if self.html:  # before the metrics, but its failure costs nothing written already
            try:
                write_html(report, self.html)
            except HarnessInputError as exc:
                failed = exc
        if self.metrics is not None:
            if self.pushgateway:
                try:
                    push_to_gateway(self.pushgateway, self.metrics.registry, run_id, shard_label)
                except HarnessInputError as exc:
                    failed = failed or exc
            if self.textfile:
                try:
                    write_textfile(self.textfile, self.metrics.registry, run_id)
                except HarnessInputError as exc:
                    failed = failed or exc
        if failed is not None:
            raise failed
