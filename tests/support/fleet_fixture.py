"""A small fleet file for exporter tests: every row kind provision export must get right."""

from __future__ import annotations

from pathlib import Path

SMALL_FLEET = """
[fleet]
name = "exporters-small"
seed = 5

[children]
count = 2
inactive = 1

[[cohorts]]
name = "v5-legacy-upper"   # MAC upper-case, legacy HMAC: what most of the real fleet is
count = 3

[[cohorts]]
name = "v5-normalized"
count = 2
signing = "normalized"
firmware_version = "5.1.0"

[[cohorts]]
name = "disabled"
count = 1
active = false

[[cohorts]]
name = "factory-secret"
count = 2
oob = "provisioned"

[[cohorts]]
name = "auto-register"     # not provisioned: must not be exported
count = 2
id_style = "prefixed"
prefix = "esp32-"
provisioned = false
"""


def write_small_fleet(directory: Path) -> Path:
    path = directory / "small.toml"
    path.write_text(SMALL_FLEET, encoding="utf-8")
    return path
