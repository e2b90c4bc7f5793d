"""A run: options in, judged results out, through the one list of exporters.

- ``SoakOptions`` / ``SoakOutcome`` (``harness.run.options``);
- ``run_soak`` (async) and ``run_soak_sync`` (``harness.run.runner``): the
  scheduler, with episodes driven by ``harness.run.episodes``;
- ``SoakJob`` / ``run_job`` (``harness.run.job``): workers, thresholds and
  exporters around one run.
"""

from __future__ import annotations

from harness.judge import RunObserver
from harness.run.job import JobResult, SoakJob, run_job
from harness.run.options import SoakOptions, SoakOutcome
from harness.run.runner import run_soak, run_soak_sync

__all__ = [
    "JobResult",
    "RunObserver",
    "SoakJob",
    "SoakOptions",
    "SoakOutcome",
    "run_job",
    "run_soak",
    "run_soak_sync",
]
