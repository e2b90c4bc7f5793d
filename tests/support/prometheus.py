"""A real Prometheus (Debian ``prometheus``) scraping given targets every second, for
tests that evaluate PromQL the way Grafana would, through its HTTP API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Self

from harness.services import ChildServer
from tests.support import require_binary


class PrometheusServer(ChildServer):
    """``prometheus`` on a free port, one job per (name, host:port) target, 1 s scrapes."""

    def __init__(self, targets: Sequence[tuple[str, str]]) -> None:
        self.binary = require_binary("prometheus", "prometheus")
        super().__init__("harness-prometheus-")
        self.targets = list(targets)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        jobs = "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n"
            for name, target in self.targets
        )
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n" + jobs
        )
        log = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready: {self.log_tail()}")

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query now: Prometheus' whole answer (``status``, ``data`` or ``error``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with an error body
            return dict(json.loads(exc.read()))

    def healthy_targets(self) -> set[str]:
        """The jobs whose last scrape succeeded."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            data = json.loads(resp.read())
        return {t["labels"]["job"] for t in data["data"]["activeTargets"] if t["health"] == "up"}

    def log_tail(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace")[-800:] if path.exists() else ""
