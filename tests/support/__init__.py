"""Shared test support: real binaries and free ports, never stand-ins.

In CI (``CI=true``) a missing binary fails the test instead of skipping it, so
nothing real is silently left out of a green run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.services import find_binary

ROOT = Path(__file__).resolve().parents[2]
# The `harness` command of this checkout, whether or not it is installed as a script.
HARNESS = [sys.executable, "-c", "from harness.cli import main; main()"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, package: str | None = None) -> str:
    """Return the binary's path; skip without it locally, fail without it in CI."""
    path = find_binary(name)
    if path is None:
        msg = f"{name} not found (apt-get install {package or name})"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_harness(
    *args: str, timeout: float = 120, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` in a subprocess (from the repository root unless ``cwd``), output
    captured as text."""
    return subprocess.run(
        [*HARNESS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
