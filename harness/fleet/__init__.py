"""The fleet: cohorts of virtual ESP32 devices, their claim plan and the soak runner.

Public API:

- ``load_fleet(path) -> Fleet`` / ``parse_fleet(text, where)``: fleet files.
- ``Fleet`` (``devices()``, ``device(i)``, ``scaled(n)``, ``with_seed(s)``,
  ``seed_export()``), ``Cohort``, ``VirtualDevice``.
- ``plan_episodes`` / ``Episode`` / ``SCENARIOS``: what each device does, deterministically.
- ``run_soak(SoakOptions) -> SoakOutcome`` (async), ``run_soak_sync`` and
  ``RunObserver`` (in ``harness.fleet.runner``, imported lazily because it pulls
  in the transport).
- ``run_job(SoakJob) -> JobResult``: a whole ``harness soak`` (workers,
  thresholds, report, JUnit, Prometheus), in ``harness.fleet.job``.
"""

from __future__ import annotations

from typing import Any

from harness.fleet.loader import load_fleet, parse_fleet
from harness.fleet.model import ChildProfile, Cohort, Fleet, VirtualDevice
from harness.fleet.plan import SCENARIOS, Episode, plan_episodes

__all__ = [
    "SCENARIOS",
    "ChildProfile",
    "Cohort",
    "Episode",
    "Fleet",
    "JobResult",
    "RunObserver",
    "SoakJob",
    "SoakOptions",
    "SoakOutcome",
    "VirtualDevice",
    "load_fleet",
    "parse_fleet",
    "plan_episodes",
    "run_job",
    "run_soak",
    "run_soak_sync",
]

_RUNNER = {"RunObserver", "SoakOptions", "SoakOutcome", "run_soak", "run_soak_sync"}
_JOB = {"JobResult", "SoakJob", "run_job"}


def __getattr__(name: str) -> Any:
    if name in _RUNNER:
        from harness.fleet import runner

        return getattr(runner, name)
    if name in _JOB:
        from harness.fleet import job

        return getattr(job, name)
    raise AttributeError(name)
