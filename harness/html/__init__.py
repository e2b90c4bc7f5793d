"""The HTML report: one self-contained file a person opens offline (``--html FILE``).

``render`` picks the page by the report's shape: a compat report (its
``configurations``) or a run report (``claims``: soak, ``hil run``, ``report
merge``). ``write_html`` writes it atomically, as the JSON report is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report import write_atomic


def render(report: Mapping[str, Any]) -> str:
    """The HTML document for any report the harness writes."""
    if "configurations" in report:
        from harness.html.compat_page import render_compat

        return render_compat(report)
    from harness.html.run_page import render_run

    return render_run(report)


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the HTML report atomically (a half-written file never opens in a browser)."""
    return write_atomic("--html", path, render(report).encode("utf-8"))
