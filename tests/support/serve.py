"""A real ``harness serve`` process for tests that kill and restart the server mid-soak."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from harness.flags import Flags
from harness.fleet import load_fleet
from tests.support import HARNESS, ROOT


def fleet_seed(tmp_path: Path, fleet: Path) -> Path:
    """The seed file that loads ``fleet``'s devices and children on a server."""
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(load_fleet(fleet).seed_export()))
    return seed


def serve(seed: Path, port: int) -> subprocess.Popen[str]:
    """``harness serve`` on ``port`` with ``seed``'s rows, flags from nothing but its defaults."""
    cmd = [*HARNESS, "serve", "--port", str(port), "--seed", str(seed), "--log-file", "none"]
    env = {k: v for k, v in os.environ.items() if k not in Flags.ENV_NAMES}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline(), "harness serve did not start"
    return proc


def successes(port: int) -> float:
    """The server's own count of 200s (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^claim_success_total ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_for_claims(port: int, at_least: int = 50, limit_s: float = 60.0) -> None:
    """Until a soak's claims are being answered: a soak starts slowly on a busy host, so a
    test that kills the server at a fixed time may kill it before the first claim."""
    end = time.monotonic() + limit_s
    while successes(port) < at_least:
        assert time.monotonic() < end, "the soak never got a claim answered"
        time.sleep(0.2)
