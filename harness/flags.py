"""The five v5 server feature flags, one model for the server, the oracle and the CLI.

The names, defaults and accepted spellings live here once so that the reference
server and the fleet oracle can never disagree about what a configuration means.
A value that is not clearly true or false is an error naming the flag, never a
silent ``false``: a typo in a rollout must stop the start, not change behaviour.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

from harness.errors import HarnessInputError

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def parse_flag_value(name: str, value: object) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case) to a bool; anything else names the flag."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise HarnessInputError(
        name, f"{value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)"
    )


@dataclass(frozen=True, slots=True)
class Flags:
    """One server configuration: the five flags, production defaults from the v5 checklist."""

    enable_idempotency: bool = False
    disable_idempotency_on_redis_failure: bool = True
    enable_auto_register: bool = False
    fail_open_on_redis_error: bool = False
    normalize_ids_in_hmac: bool = False

    # Environment name -> field name, in the checklist's order.
    ENV_NAMES: ClassVar[dict[str, str]] = {
        "ENABLE_IDEMPOTENCY": "enable_idempotency",
        "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE": "disable_idempotency_on_redis_failure",
        "ENABLE_AUTO_REGISTER": "enable_auto_register",
        "FAIL_OPEN_ON_REDIS_ERROR": "fail_open_on_redis_error",
        "NORMALIZE_IDS_IN_HMAC": "normalize_ids_in_hmac",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Flags:
        """Read the flags from an environment mapping (``os.environ`` when None)."""
        if env is None:
            import os

            env = os.environ
        # Set but empty is an error too (as pydantic settings in v5 would have it).
        values = {
            attr: parse_flag_value(name, env[name])
            for name, attr in cls.ENV_NAMES.items()
            if name in env
        }
        return cls(**values)

    def with_overrides(self, items: Iterable[str]) -> Flags:
        """Apply ``NAME=VALUE`` overrides (as ``--flag`` gives them); unknown names are errors."""
        changes: dict[str, bool] = {}
        for item in items:
            name, sep, value = item.partition("=")
            name = name.strip().upper()
            if not sep:
                raise HarnessInputError("--flag", f"{item!r} is not NAME=VALUE")
            if name not in self.ENV_NAMES:
                known = ", ".join(self.ENV_NAMES)
                raise HarnessInputError(name or "--flag", f"unknown flag (known: {known})")
            changes[self.ENV_NAMES[name]] = parse_flag_value(name, value)
        return replace(self, **changes)

    @classmethod
    def all_combinations(cls) -> list[Flags]:
        """All 32 configurations, in a stable order (first is all-false)."""
        names = [f.name for f in fields(cls)]
        return [
            cls(**dict(zip(names, bits, strict=True)))
            for bits in itertools.product((False, True), repeat=len(names))
        ]

    def to_env(self) -> dict[str, str]:
        """The flags as environment variables (``true``/``false``)."""
        values = asdict(self)
        return {name: str(values[attr]).lower() for name, attr in self.ENV_NAMES.items()}

    def on(self) -> list[str]:
        """Environment names of the flags that are on."""
        values = asdict(self)
        return [name for name, attr in self.ENV_NAMES.items() if values[attr]]

    def describe(self) -> str:
        """Short human text: the flags that are on, or ``none``."""
        return ", ".join(self.on()) or "none"

    def key(self) -> str:
        """A compact stable key such as ``I1D1A0F0N0`` for test ids and report rows."""
        values = asdict(self)
        return "".join(
            f"{letter}{int(values[attr])}"
            for letter, attr in zip("IDAFN", self.ENV_NAMES.values(), strict=True)
        )
