"""Remake the README's screenshots: ``python docs/screenshots.py`` (needs chromium).

Runs the two commands the README shows with ``--html`` (a 20 s soak with the v5
idempotency race and a server restart, and the compat matrix of the teddy's v5
fleet), then has headless Chromium draw each page into ``docs/`` (offline, in a
network namespace of its own, when run as root).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.html.browser import screenshot

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RUNS = {
    "soak-report": (
        [
            "soak",
            "--duration",
            "20",
            "--rate",
            "300",
            "--flag",
            "ENABLE_IDEMPOTENCY=true",
            "--fault",
            "server:restart@8s+2s",
            "--threshold",
            "p99<0.5",
        ],
        (1100, 2300),
    ),
    "compat-report": (
        ["compat", "--fleet", str(ROOT / "fleets" / "teddy-v5.toml"), "--claims-per-cohort", "50"],
        (1100, 760),
    ),
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, (args, size) in RUNS.items():
            html = Path(tmp, f"{name}.html")
            cmd = [sys.executable, "-c", "from harness.cli import main; main()", *args]
            cmd += ["--html", str(html)]
            subprocess.run(cmd, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
            png = screenshot(html, DOCS / f"{name}.png", size=size, offline=os.geteuid() == 0)
            print(f"wrote {png.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
