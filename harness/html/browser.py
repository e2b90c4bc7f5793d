"""Headless Chromium on an HTML report: the DOM it renders and a screenshot.

The browser test and the README's screenshots open reports the way a person
does, in the Debian ``chromium`` (never a browser downloaded at test time).
``offline`` runs it in a network namespace of its own (``unshare -n``, root
only): no interface but a downed loopback, so a page that needed the network
would render without what it fetched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.services import find_binary


def chromium() -> str | None:
    """The system Chromium (Debian's ``chromium``), if installed."""
    return find_binary("chromium")


def _command(url: str, offline: bool, extra: list[str]) -> list[str]:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    if offline:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise PermissionError("offline needs root and unshare(1) for a network namespace")
        cmd = ["unshare", "--net", *cmd]
    return cmd


def dump_dom(path: Path, offline: bool = True, timeout: float = 60.0) -> str:
    """The DOM Chromium renders from ``path``, serialised."""
    done = subprocess.run(
        _command(path.resolve().as_uri(), offline, ["--dump-dom"]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


def screenshot(path: Path, png: Path, size: tuple[int, int], offline: bool = True) -> Path:
    """A PNG of ``path`` as Chromium draws it, ``size`` pixels (width, height)."""
    subprocess.run(
        _command(
            path.resolve().as_uri(),
            offline,
            [f"--window-size={size[0]},{size[1]}", f"--screenshot={png.resolve()}"],
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {path}")
    return png
