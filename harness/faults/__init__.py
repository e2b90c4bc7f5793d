"""A TCP fault proxy: put it between any two parts (client and Redis, PostgreSQL, a server).

``FaultProxy`` runs in the caller's event loop, ``ProxyThread`` on its own loop
for synchronous code, ``harness fault-proxy`` as a command with an HTTP control
API. Modes and their text syntax are in ``harness.faults.modes``.
"""

from __future__ import annotations

from harness.faults.modes import (
    Blackhole,
    Cut,
    Delay,
    Drop,
    Mode,
    Pass,
    Reset,
    SlowClose,
    parse_duration,
    parse_mode,
    parse_schedule,
)
from harness.faults.proxy import FaultProxy, ProxyStats
from harness.faults.thread import ProxyThread

__all__ = [
    "Blackhole",
    "Cut",
    "Delay",
    "Drop",
    "FaultProxy",
    "Mode",
    "Pass",
    "ProxyStats",
    "ProxyThread",
    "Reset",
    "SlowClose",
    "parse_duration",
    "parse_mode",
    "parse_schedule",
]
