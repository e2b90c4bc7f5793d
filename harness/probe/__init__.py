"""``harness probe``: which flags and which build a claim server really runs.

``harness.probe.steps`` sends the claims and reads the answers;
``harness.probe.result`` holds what they showed.
"""

from __future__ import annotations

from harness.probe.result import (
    BURST,
    BURSTS,
    PROBED_FLAGS,
    FlagVerdict,
    ProbeClaim,
    ProbeDevice,
    ProbeResult,
    ProfileVerdict,
)
from harness.probe.steps import (
    device_from_fleet,
    probe_embedded,
    probe_flags,
    probe_seed_device,
    probe_target,
)

__all__ = [
    "BURST",
    "BURSTS",
    "PROBED_FLAGS",
    "FlagVerdict",
    "ProbeClaim",
    "ProbeDevice",
    "ProbeResult",
    "ProfileVerdict",
    "device_from_fleet",
    "probe_embedded",
    "probe_flags",
    "probe_seed_device",
    "probe_target",
]
