"""What a device of a run is: the seam a virtual device and a bench's board both fill.

The oracle needs its facts (``harness.oracle.DeviceFacts``); the runner, the
scenarios and the judge need a little more: where it sits in the plan, the
cohort it reports under, the request it sends, its firmware's retry habits,
who signs for it, and, for a board, the remote end that signs or claims over
serial. ``harness.fleet.model.VirtualDevice`` and ``harness.hil.devices.BoardDevice``
implement it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from harness.firmware import FirmwareProfile
from harness.oracle import DeviceFacts
from harness.signer import Signer
from harness.transport import HttpResponse


class CohortFacts(Protocol):
    """A device's cohort as a run reads it: its name in reports, and its waits."""

    name: str
    retry_delay: float
    time_scale: float


class Remote(Protocol):
    """A board's end of a device: blocking serial calls the runner makes in a thread."""

    signs: bool  # the board signs each claim and the harness POSTs it
    claims: bool  # the board POSTs each claim itself
    after: Callable[[], None] | None  # run after each of its episodes (a bench's hook)

    def sign(self, dev: Any) -> tuple[str, str, bytes]: ...
    def claim(self, url: str, dev: Any) -> HttpResponse: ...
    def answered(self, key: str) -> None: ...
    def failed(self, exc: BaseException) -> bool: ...


class Device(DeviceFacts, Protocol):
    """One device of a run (see the module docstring): the oracle's facts and more."""

    index: int
    firmware_version: str | None
    norm_ids: tuple[str, str]
    headers: Sequence[tuple[str, str]]

    @property
    def cohort(self) -> CohortFacts: ...
    @property
    def firmware(self) -> FirmwareProfile | None: ...
    @property
    def habits(self) -> FirmwareProfile | None: ...
    @property
    def signer(self) -> Signer | None: ...
    @property
    def remote(self) -> Remote | None: ...

    def body(self, nonce_hex: str, hmac_hex: str) -> bytes: ...
