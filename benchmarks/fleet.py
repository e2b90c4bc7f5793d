"""The benchmark's deterministic fleet, shared by the null server and every client.

One cohort of provisioned, active v5 devices (``Teddy-ESP32-000001`` style,
legacy signing, v5-derived secrets) and no network scenarios, so every claim is
a first claim the oracle expects to be 200. The null server precomputes a 200
body with real HS256 tokens for each device, so clients can run their full
token checks while the server does no per-claim crypto.
"""

from __future__ import annotations

from harness.fleet.loader import parse_fleet
from harness.fleet.model import Fleet

# HS256 secret of the null server's tokens: a benchmark constant, not a credential.
BENCH_JWT_SECRET = "benchmark-null-server-secret-not-for-production"
DEFAULT_DEVICES = 1000
FIRMWARE = "5.0.3"

_FLEET_TOML = f"""
[fleet]
name = "bench"
seed = 6

[children]
count = 40
prefix = "child-"

[[cohorts]]
name = "bench"
count = {{count}}
id_style = "prefixed"
prefix = "Teddy-ESP32-"
suffix = "number"
firmware_version = "{FIRMWARE}"
"""


def bench_fleet(devices: int = DEFAULT_DEVICES) -> Fleet:
    """The bench fleet with ``devices`` devices (all first claims, all expected 200)."""
    return parse_fleet(_FLEET_TOML.format(count=devices), "<bench fleet>")
