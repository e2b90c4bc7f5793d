"""Every MQTT topic a device uses, in one place (``--mqtt-prefix`` changes the root).

``<d>`` is the lower-case device ID the server put in the token's ``device_id``
claim (CONTRACT.md section 2, step 2), so a device's topics follow its server
identity, not the case its firmware holds the ID in.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessInputError

DEFAULT_PREFIX = "teddy/devices"


@dataclass(frozen=True, slots=True)
class Topics:
    """The four topics of one device under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def status(self, d: str) -> str:
        return f"{self.prefix}/{d}/status"

    def heartbeat(self, d: str) -> str:
        return f"{self.prefix}/{d}/heartbeat"

    def command(self, d: str) -> str:
        return f"{self.prefix}/{d}/cmd"

    def reply(self, d: str) -> str:
        return f"{self.prefix}/{d}/reply"

    @property
    def every_device(self) -> str:
        """The observer's subscription: every device's every topic."""
        return f"{self.prefix}/+/+"

    @property
    def acl_pattern(self) -> str:
        """Mosquitto's ACL pattern for a device's own topics (``%c``: its client ID, which
        is its normalised device ID)."""
        return f"{self.prefix}/%c/#"


def check_prefix(prefix: str) -> str:
    """A topic root a device may publish under: no wildcards, no empty levels, no ends."""
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise HarnessInputError(
            "--mqtt-prefix", f"must be levels like teddy/devices, got {prefix!r}"
        )
    if any(c in prefix for c in "+#\x00"):
        raise HarnessInputError("--mqtt-prefix", f"no wildcards or NUL in a topic, got {prefix!r}")
    return prefix
