"""Which devices one shard runs: a deterministic, disjoint slice ``I/N`` of a fleet.

Shard ``I`` of ``N`` (0-based, like Kubernetes' ``JOB_COMPLETION_INDEX``) takes
the devices whose fleet-wide index ``i`` has ``i % N == I``. Striding rather than
cutting blocks keeps every cohort's share the same on every shard, so each
shard's report looks like a scaled-down copy of the whole run. The slice is a
``range``: nothing is materialised, and the union over ``I = 0..N-1`` is the fleet,
each device exactly once. Because a fleet's devices are a pure function of
(seed, index) and carry unique IDs, the shards also get disjoint device IDs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import HarnessInputError

if TYPE_CHECKING:
    from harness.fleet.model import Fleet, VirtualDevice

ENV_INDEX = "JOB_COMPLETION_INDEX"
ENV_COUNT = "JOB_COMPLETIONS"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise HarnessInputError("--shard", f"shard count must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise HarnessInputError(
                "--shard",
                f"index {self.index} outside 0..{self.count - 1} (0-based, as {ENV_INDEX})",
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def label(self) -> str:
        """A grouping-key value for the Pushgateway and a file-name part: ``0-of-4``."""
        return f"{self.index}-of-{self.count}"

    def share(self, total: float) -> float:
        """This shard's part of a fleet-wide quantity such as an arrival rate."""
        return total / self.count

    @classmethod
    def parse(cls, text: str, field: str = "--shard") -> Shard:
        """``"I/N"`` -> ``Shard(I, N)``; anything else is one clear input error."""
        m = _SPEC.match(text or "")
        if m is None:
            raise HarnessInputError(
                field, f"expected I/N such as 0/4 (0-based index), got {text!r}"
            )
        index, count = int(m[1]), int(m[2])
        if count < 1:
            raise HarnessInputError(field, f"shard count must be >= 1, got {text!r}")
        if index >= count:
            raise HarnessInputError(
                field, f"index {index} outside 0..{count - 1} in {text!r} (0-based, as {ENV_INDEX})"
            )
        return cls(index, count)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Shard | None:
        """The shard a Kubernetes Indexed Job assigned, or None outside one.

        Kubernetes sets ``JOB_COMPLETION_INDEX`` itself; ``JOB_COMPLETIONS`` must be
        set in the pod template (deploy/ does), since the index alone says nothing
        about how many shards there are.
        """
        env = os.environ if environ is None else environ
        raw_index, raw_count = env.get(ENV_INDEX), env.get(ENV_COUNT)
        if raw_index is None and raw_count is None:
            return None
        if raw_index is None or raw_count is None:
            missing = ENV_COUNT if raw_count is None else ENV_INDEX
            present = ENV_INDEX if raw_count is None else ENV_COUNT
            raise HarnessInputError(missing, f"not set although {present} is; set both or neither")
        for name, raw in ((ENV_INDEX, raw_index), (ENV_COUNT, raw_count)):
            if not raw.strip().isdigit():
                raise HarnessInputError(name, f"must be a non-negative integer, got {raw!r}")
        return cls.parse(f"{raw_index.strip()}/{raw_count.strip()}", f"{ENV_INDEX}/{ENV_COUNT}")

    @classmethod
    def resolve(cls, option: str | None, environ: Mapping[str, str] | None = None) -> Shard:
        """``--shard`` when given, else the Indexed Job's environment, else the whole fleet."""
        if option:
            return cls.parse(option)
        return cls.from_env(environ) or cls()


def shard_indices(fleet_size: int, shard: Shard) -> range:
    """The fleet-wide device indexes shard ``shard`` runs (pure, deterministic, disjoint)."""
    if fleet_size < 0:
        raise HarnessInputError("fleet", f"size must be >= 0, got {fleet_size}")
    return range(shard.index, fleet_size, shard.count)


def shard_devices(fleet: Fleet, shard: Shard) -> Iterator[VirtualDevice]:
    """This shard's devices, built lazily from the fleet's seed."""
    for i in shard_indices(len(fleet), shard):
        yield fleet.device(i)
