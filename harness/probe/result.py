"""What the probe found: the device it used, each flag's verdict, the build it names, and
every claim it sent (masked), as a table and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from harness.errors import HarnessInputError
from harness.masking import mask_id, scrub
from harness.protocol import validate_child_id, validate_device_id

Verdict = Literal["on", "off", "undecided", "not probed", "no effect"]
BURST = 8  # identical claims in flight together, to see the v5 race
BURSTS = 3  # bursts at most: whether they overlap is up to the server's scheduler
PROBE_FIRMWARE = "harness-probe"
MAX_RATE_LIMIT_WAITS = 3
MAX_RETRY_AFTER_S = 5.0
PROBED_FLAGS: tuple[str, ...] = (
    "ENABLE_IDEMPOTENCY",
    "ENABLE_AUTO_REGISTER",
    "NORMALIZE_IDS_IN_HMAC",
)
NOT_PROBED = {
    "DISABLE_IDEMPOTENCY_ON_REDIS_FAILURE": "only observable while the nonce store is down",
    "FAIL_OPEN_ON_REDIS_ERROR": "only observable while the nonce store is down",
}


@dataclass(frozen=True, slots=True)
class ProbeDevice:
    """A device the target has provisioned (any ID case) with the OOB secret it stores."""

    device_id: str
    oob: bytes
    child_id: str

    def __post_init__(self) -> None:
        validate_device_id(self.device_id, "--device-id")
        validate_child_id(self.child_id, "--child-id")
        if len(self.oob) != 32:
            raise HarnessInputError("--oob", f"must be 32 bytes (64 hex), got {len(self.oob)}")

    def __repr__(self) -> str:  # never the secret
        return f"ProbeDevice({mask_id(self.device_id)}, child {mask_id(self.child_id)})"


@dataclass(frozen=True, slots=True)
class FlagVerdict:
    flag: str
    verdict: Verdict
    evidence: str

    def to_dict(self) -> dict[str, str]:
        return {"flag": self.flag, "verdict": self.verdict, "evidence": scrub(self.evidence)}


@dataclass(frozen=True, slots=True)
class ProbeClaim:
    """One claim the probe sent and what came back (masked, for the report)."""

    step: str
    status: int | str
    idempotent_header: bool = False
    correlation_id: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status,
            "x_idempotent_request": self.idempotent_header,
            "x_correlation_id": self.correlation_id,
            "detail": scrub(self.detail),
        }


@dataclass(slots=True)
class ProfileVerdict:
    """The build the probe names (``v5.0``, ``v5-head``, ``atomic`` or ``unknown``) and how
    it is deployed, each with its evidence."""

    name: str
    evidence: list[str] = field(default_factory=list)
    bare_router: bool | None = None  # None: no error answer seen to tell
    environment: str | None = None  # "production", "not production", None: not probed

    def soak_options(self) -> list[str]:
        """What to give ``harness soak`` besides the flags."""
        out = [] if self.name == "unknown" else [f"--profile {self.name}"]
        if self.environment == "not production":
            out.append("--environment development")
        if self.bare_router:
            out.append("--bare-router")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "evidence": [scrub(e) for e in self.evidence],
            "bare_router": self.bare_router,
            "environment": self.environment,
        }


@dataclass(slots=True)
class ProbeResult:
    target: str
    verdicts: list[FlagVerdict]
    claims: list[ProbeClaim] = field(default_factory=list)
    profile: ProfileVerdict = field(default_factory=lambda: ProfileVerdict("unknown"))

    @property
    def decided(self) -> bool:
        """Every probed flag got an on/off verdict, and the build was named."""
        flags = all(v.verdict in ("on", "off") for v in self.verdicts if v.verdict in (
            "on", "off", "undecided"))  # fmt: skip
        return flags and self.profile.name != "unknown"

    def verdict(self, flag: str) -> Verdict:
        for v in self.verdicts:
            if v.flag == flag:
                return v.verdict
        raise KeyError(flag)

    def flag_overrides(self) -> list[str]:
        """The decided flags as ``--flag NAME=true|false`` values for ``harness soak``."""
        return [
            f"{v.flag}={'true' if v.verdict == 'on' else 'false'}"
            for v in self.verdicts
            if v.verdict in ("on", "off")
        ]

    def soak_line(self) -> str:
        """``--profile ... --flag ...``: the declaration for ``harness soak --target``."""
        flags = [f"--flag {f}" for f in self.flag_overrides()]
        return " ".join([*self.profile.soak_options(), *flags])

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "decided": self.decided,
            "profile": self.profile.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "soak_flags": self.flag_overrides(),
            "soak_options": self.soak_line(),
            "claims": [c.to_dict() for c in self.claims],
        }

    def table(self) -> str:
        """The console table: the build, then flag, verdict, evidence."""
        rows = [("flag", "verdict", "evidence")]
        rows += [("profile", self.profile.name, scrub(e)) for e in self.profile.evidence[:1]]
        rows += [("", "", scrub(e)) for e in self.profile.evidence[1:]]
        rows += [(v.flag, v.verdict, scrub(v.evidence)) for v in self.verdicts]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
        lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 8}")
        return "\n".join(lines)
