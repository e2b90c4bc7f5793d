"""The fleet: cohorts of virtual ESP32 devices and their claim plan.

Public API:

- ``load_fleet(path) -> Fleet`` / ``parse_fleet(text, where)``: fleet files.
- ``Fleet`` (``devices()``, ``device(i)``, ``scaled(n)``, ``with_seed(s)``,
  ``seed_export()``), ``Cohort``, ``VirtualDevice``.
- ``plan_episodes`` / ``Episode`` / ``SCENARIOS``: what each device does, deterministically.

Running a fleet is ``harness.run`` (``run_soak``, ``run_job``).
"""

from __future__ import annotations

from harness.fleet.loader import load_fleet, parse_fleet
from harness.fleet.model import ChildProfile, Cohort, Fleet, VirtualDevice
from harness.fleet.plan import SCENARIOS, Episode, plan_episodes

__all__ = [
    "SCENARIOS",
    "ChildProfile",
    "Cohort",
    "Episode",
    "Fleet",
    "VirtualDevice",
    "load_fleet",
    "parse_fleet",
    "plan_episodes",
]
